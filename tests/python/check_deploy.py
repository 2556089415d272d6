"""Offline checks of the files under deploy/, run by tests/deploy.rs with $WXGATE_TEST_PYTHON.

  check_deploy.py k8s DIR        validate DIR/*.yaml against the Kubernetes schemas (strict),
                                 check the kinds that have no schema, print a JSON plan of the
                                 wxgate containers (args, probes, config) for the binary test
  check_deploy.py compose DIR    check docker-compose.yml and nginx.conf agree (without Docker)
  check_deploy.py metrics FILE…  every metric an alert rule or a dashboard queries is a contract one

Exit 0 when everything holds, 1 with one line per problem, 3 when a module is missing.
"""

import json
import os
import re
import sys

try:
    import yaml
    import kubernetes_validate
except ImportError as e:  # the Rust test turns exit 3 into "install ..."
    print(f"missing Python module: {e}", file=sys.stderr)
    sys.exit(3)

# The metric contract of issue #12. Histograms also expose _bucket, _sum and _count.
CONTRACT_COUNTERS_GAUGES = {
    "wxgate_requests_total",
    "wxgate_upstream_errors_total",
    "wxgate_logins_total",
    "wxgate_wechat_requests_total",
    "wxgate_token_refreshes_total",
    "wxgate_store_up",
    "wxgate_sessions_revoked_total",
    "wxgate_config_reloads_total",
    "wxgate_config_last_reload_success_timestamp_seconds",
    "wxgate_connections",
    "wxgate_build_info",
    # "the usual process_* metrics" (the Prometheus client's process collector).
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
    "process_threads",
}
CONTRACT_HISTOGRAMS = {
    "wxgate_request_duration_seconds",
    "wxgate_upstream_duration_seconds",
    "wxgate_wechat_request_duration_seconds",
}
# Series Prometheus makes itself for every scrape target, not exported by wxgate.
PROMETHEUS_OWN = {"up"}

CONTRACT = (
    CONTRACT_COUNTERS_GAUGES
    | PROMETHEUS_OWN
    | {h + s for h in CONTRACT_HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
)

# Label values of the contract, where it fixes them.
CONTRACT_LABEL_VALUES = {
    "code": {"2xx", "3xx", "4xx", "5xx", "1xx"},
    "result": {
        "started", "succeeded", "state", "code_used", "refused", "snapshot",
        "wechat_error", "loop_guard", "rate_limited", "success", "failure",
    },
    "kind": {"connect", "timeout", "reset", "tls"},
    "state": {"active", "idle"},
}

PROMQL_WORDS = {
    # functions
    "abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes", "clamp",
    "clamp_max", "clamp_min", "count_over_time", "day_of_month", "day_of_week", "delta",
    "deriv", "exp", "floor", "histogram_quantile", "holt_winters", "hour", "idelta",
    "increase", "irate", "label_join", "label_replace", "ln", "log2", "log10",
    "last_over_time", "max_over_time", "min_over_time", "minute", "month",
    "predict_linear", "quantile_over_time", "rate", "resets", "round", "scalar", "sort",
    "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "time",
    "timestamp", "vector", "year",
    # aggregations and keywords
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "by", "without", "on", "ignoring", "group_left",
    "group_right", "and", "or", "unless", "bool", "offset",
}


def metric_names(expr):
    """The metric names a PromQL expression selects (good enough for our own files)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # range selectors
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\$\{?\w+\}?", "", e)  # Grafana variables ($__rate_interval, ${x})
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)", e):
        word = m.group(1)
        if word in PROMQL_WORDS or re.fullmatch(r"\d+[smhdwy]", word) or word in ("e", "inf", "nan", "Inf", "NaN"):
            continue
        names.add(word)
    return names


def label_matchers(expr):
    """(label, value-or-regex) pairs of every matcher in an expression."""
    out = []
    for block in re.findall(r"\{([^}]*)\}", expr):
        for m in re.finditer(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', block):
            out.append((m.group(1), m.group(2), m.group(3)))
    return out


def check_expr(where, expr, problems, seen):
    names = metric_names(expr)
    if not names:
        problems.append(f"{where}: selects no metric: {expr!r}")
    for n in sorted(names):
        seen.add(n)
        if n not in CONTRACT:
            problems.append(f"{where}: {n} is not a contract metric")
    for label, op, value in label_matchers(expr):
        allowed = CONTRACT_LABEL_VALUES.get(label)
        if allowed is None or "$" in value:
            continue
        values = value.split("|") if op in ("=~", "!~") else [value]
        for v in values:
            if v not in allowed:
                problems.append(f"{where}: {label}={v!r} is not a contract value of {label}")


def cmd_metrics(paths):
    problems, seen, count = [], set(), 0
    for path in paths:
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                dash = json.load(f)
            panels = list(dash.get("panels", []))
            for p in list(panels):
                panels.extend(p.get("panels", []))
            for p in panels:
                for t in p.get("targets", []):
                    count += 1
                    check_expr(f"{path}: panel {p.get('title')!r}", t["expr"], problems, seen)
            for v in dash.get("templating", {}).get("list", []):
                q = v.get("query")
                if isinstance(q, dict):
                    m = re.search(r"label_values\((.*),\s*\w+\)$", q.get("query", ""))
                    if m:
                        check_expr(f"{path}: variable {v['name']}", m.group(1), problems, seen)
        else:
            with open(path, encoding="utf-8") as f:
                doc = yaml.safe_load(f)
            for g in doc["groups"]:
                for r in g["rules"]:
                    count += 1
                    name = r.get("alert") or r.get("record")
                    check_expr(f"{path}: {name}", r["expr"], problems, seen)
                    if "alert" in r:
                        ann = r.get("annotations", {})
                        for key in ("summary", "description"):
                            if not ann.get(key):
                                problems.append(f"{path}: {name}: no {key} annotation")
                        if "for" not in r:
                            problems.append(f"{path}: {name}: no for:")
                        if r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                            problems.append(f"{path}: {name}: no severity label")
    if count == 0:
        problems.append("no expressions found")
    return problems, {"expressions": count, "metrics": sorted(seen)}


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def cmd_k8s(directory):
    problems = []
    kust_path = os.path.join(directory, "kustomization.yaml")
    kust = load_all(kust_path)[0]
    for key in ("apiVersion", "kind", "resources"):
        if key not in kust:
            problems.append(f"kustomization.yaml: no {key}")
    if kust.get("kind") != "Kustomization":
        problems.append("kustomization.yaml: kind is not Kustomization")
    listed = kust.get("resources", [])
    for r in listed:
        if not os.path.isfile(os.path.join(directory, r)):
            problems.append(f"kustomization.yaml: resource {r} does not exist")
    on_disk = sorted(f for f in os.listdir(directory) if f.endswith((".yaml", ".yml")))
    for f in on_disk:
        if f != "kustomization.yaml" and f not in listed:
            problems.append(f"{f} is not listed in kustomization.yaml resources")

    docs = []
    for f in listed:
        if not os.path.isfile(os.path.join(directory, f)):
            continue
        for d in load_all(os.path.join(directory, f)):
            docs.append((f, d))
    version = kubernetes_validate.latest_version()
    for f, d in docs:
        where = f"{f}: {d.get('kind')}/{d.get('metadata', {}).get('name')}"
        if d.get("kind") == "ServiceMonitor":
            check_servicemonitor(where, d, docs, problems)
            continue
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{where}: {e.message} at {'.'.join(str(p) for p in e.path)}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{where}: no Kubernetes schema and no check of ours for this kind")

    by_kind = {}
    for f, d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    plan = []
    for name, dep in by_kind.get("Deployment", {}).items():
        plan.append(deployment_plan(name, dep, by_kind, problems))
    if not plan:
        problems.append("no Deployment")
    check_services(by_kind, problems)
    check_pdbs(by_kind, problems)
    return problems, {"kubernetes_version": version, "deployments": plan}


def check_servicemonitor(where, d, docs, problems):
    if d.get("apiVersion") != "monitoring.coreos.com/v1":
        problems.append(f"{where}: apiVersion must be monitoring.coreos.com/v1")
    spec = d.get("spec") or {}
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    endpoints = spec.get("endpoints") or []
    if not labels:
        problems.append(f"{where}: spec.selector.matchLabels is required")
    if not endpoints:
        problems.append(f"{where}: spec.endpoints is required")
    services = [s for _, s in docs if s.get("kind") == "Service"
                and labels.items() <= (s["metadata"].get("labels") or {}).items()]
    if not services:
        problems.append(f"{where}: selects no Service")
    for ep in endpoints:
        if ep.get("path") != "/metrics":
            problems.append(f"{where}: endpoint path must be /metrics")
        for s in services:
            names = [p.get("name") for p in s["spec"]["ports"]]
            if ep.get("port") not in names:
                problems.append(f"{where}: Service {s['metadata']['name']} has no port {ep.get('port')!r}")


def check_services(by_kind, problems):
    deps = by_kind.get("Deployment", {})
    for name, svc in by_kind.get("Service", {}).items():
        sel = svc["spec"].get("selector") or {}
        targets = [d for d in deps.values()
                   if sel and sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        if not targets:
            problems.append(f"Service {name}: selects no Deployment")
        for p in svc["spec"]["ports"]:
            for d in targets:
                ports = [cp for c in d["spec"]["template"]["spec"]["containers"] for cp in c.get("ports", [])]
                tp = p.get("targetPort")
                if not any(cp.get("name") == tp or cp.get("containerPort") == tp for cp in ports):
                    problems.append(f"Service {name}: targetPort {tp!r} is no container port of {d['metadata']['name']}")


def check_pdbs(by_kind, problems):
    deps = by_kind.get("Deployment", {})
    covered = set()
    for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        sel = pdb["spec"]["selector"].get("matchLabels") or {}
        for dn, d in deps.items():
            if sel.items() <= d["spec"]["template"]["metadata"]["labels"].items():
                covered.add(dn)
    for dn in deps:
        if dn not in covered:
            problems.append(f"Deployment {dn}: no PodDisruptionBudget")


def duration_seconds(s):
    m = re.fullmatch(r"(\d+)(ms|s|m)", s.strip())
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2)
    return n / 1000 if unit == "ms" else n * (60 if unit == "m" else 1)


def deployment_plan(name, dep, by_kind, problems):
    where = f"Deployment {name}"
    pod = dep["spec"]["template"]["spec"]
    wx = [c for c in pod["containers"] if c["name"] == "wxgate"]
    if len(wx) != 1:
        problems.append(f"{where}: needs exactly one container named wxgate")
        return {"name": name}
    c = wx[0]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}

    def probe(kind):
        p = c.get(kind) or {}
        get = p.get("httpGet")
        if not get:
            problems.append(f"{where}: wxgate has no {kind}.httpGet")
            return None
        port = get["port"]
        return {"path": get["path"], "port": ports.get(port, port) if isinstance(port, str) else port}

    # Security context: the pod's and the container's.
    psc, csc = pod.get("securityContext") or {}, c.get("securityContext") or {}
    if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
        problems.append(f"{where}: runAsNonRoot is not set")
    if csc.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: wxgate's readOnlyRootFilesystem is not true")
    if csc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: wxgate's allowPrivilegeEscalation is not false")
    if (csc.get("capabilities") or {}).get("drop") != ["ALL"]:
        problems.append(f"{where}: wxgate does not drop ALL capabilities")
    res = c.get("resources") or {}
    if not (res.get("requests") or {}).get("memory") or not (res.get("limits") or {}).get("memory"):
        problems.append(f"{where}: wxgate needs memory requests and limits")

    # The config: the ConfigMap mounted at the directory of the -c path.
    args = c.get("args") or []
    config_path = args[args.index("-c") + 1] if "-c" in args else None
    if config_path is None:
        problems.append(f"{where}: wxgate's args have no -c CONFIG")
    mount = next((m for m in c.get("volumeMounts", [])
                  if config_path and os.path.dirname(config_path) == m["mountPath"].rstrip("/")), None)
    files, config = {}, None
    if mount is None:
        problems.append(f"{where}: nothing is mounted at the directory of {config_path}")
    else:
        vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        sources = vol["projected"]["sources"] if "projected" in vol else [vol]
        for s in sources:
            for kind, src in (("ConfigMap", s.get("configMap")), ("Secret", s.get("secret"))):
                if not src:
                    continue
                obj = by_kind.get(kind, {}).get(src["name"])
                if obj is None:
                    problems.append(f"{where}: mounts missing {kind} {src['name']}")
                    continue
                data = {**(obj.get("data") or {}), **(obj.get("stringData") or {})}
                for item in src.get("items") or [{"key": k, "path": k} for k in data]:
                    if item["key"] not in data:
                        problems.append(f"{where}: {kind} {src['name']} has no key {item['key']}")
                    files[item["path"]] = {"kind": kind, "name": src["name"], "key": item["key"]}
                    if kind == "ConfigMap" and os.path.join(mount["mountPath"], item["path"]) == config_path:
                        config = data.get(item["key"])
    if config is None:
        problems.append(f"{where}: no ConfigMap key is mounted at {config_path}")

    env_secrets = {}
    for e in c.get("env", []):
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            secret = by_kind.get("Secret", {}).get(ref["name"])
            if secret is None or ref["key"] not in {**(secret.get("data") or {}), **(secret.get("stringData") or {})}:
                problems.append(f"{where}: env {e['name']} refers to missing {ref['name']}/{ref['key']}")
            env_secrets[e["name"]] = ref["key"]

    # Shutdown: the grace period covers the preStop pause plus server.shutdown_timeout.
    grace = pod.get("terminationGracePeriodSeconds", 30)
    pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds")
    if pre_stop is None:
        problems.append(f"{where}: wxgate has no lifecycle.preStop.sleep")
    shutdown = 30
    if config:
        m = re.search(r'^\s*shutdown_timeout\s*=\s*"([^"]+)"', config, re.M)
        if m:
            shutdown = duration_seconds(m.group(1))
    if shutdown is None or grace <= (pre_stop or 0) + shutdown:
        problems.append(f"{where}: terminationGracePeriodSeconds {grace} is not above preStop {pre_stop}s + shutdown_timeout {shutdown}s")

    return {
        "name": name,
        "command": c.get("command") or [],
        "args": args,
        "config_path": config_path,
        "config": config,
        "mount_path": mount["mountPath"] if mount else None,
        "files": files,
        "env_secrets": env_secrets,
        "env": {e["name"]: e["value"] for e in c.get("env", []) if "value" in e},
        "ports": ports,
        "liveness": probe("livenessProbe"),
        "readiness": probe("readinessProbe"),
    }


def cmd_compose(directory):
    problems = []
    with open(os.path.join(directory, "docker-compose.yml"), encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    services = doc.get("services") or {}
    wx = {n: s for n, s in services.items()
          if (s.get("command") or [None])[0] == "run" and "wxgate" in str(s.get("image", ""))}
    if len(wx) != 2:
        problems.append(f"expected two wxgate replicas (command run), found {sorted(wx)}")
    sims = [n for n, s in services.items() if (s.get("command") or [None])[0] == "simulate"]
    if not sims:
        problems.append("no simulator service (command simulate)")
    nginx = services.get("nginx")
    if nginx is None:
        problems.append("no nginx service")
    top_secrets = doc.get("secrets") or {}
    for n, s in services.items():
        for v in s.get("volumes") or []:
            src = v.split(":")[0]
            if src.startswith((".", "/")) and not os.path.exists(os.path.join(directory, src)):
                problems.append(f"{n}: volume source {src} does not exist")
        for p in s.get("ports") or []:
            if not re.fullmatch(r"\d+:\d+", str(p)):
                problems.append(f"{n}: port {p!r} is not HOST:CONTAINER")
        for sec in s.get("secrets") or []:
            if sec not in top_secrets:
                problems.append(f"{n}: secret {sec} is not defined")
        for dep in s.get("depends_on") or []:
            if dep not in services:
                problems.append(f"{n}: depends_on unknown service {dep}")
    # Both replicas read the same secrets and the same config.
    if len(wx) == 2:
        a, b = wx.values()
        if a.get("secrets") != b.get("secrets") or a.get("volumes") != b.get("volumes"):
            problems.append("the two wxgate replicas do not share the same secrets and config")
        for sec in ("session_secret", "jwt_key"):
            if sec not in (a.get("secrets") or []):
                problems.append(f"the replicas do not get the {sec} secret")
    # nginx balances over both replicas on the port their config listens on.
    with open(os.path.join(directory, "nginx.conf"), encoding="utf-8") as f:
        conf = f.read()
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", conf, re.M)
    if sorted(h for h, _ in servers) != sorted(wx):
        problems.append(f"nginx upstream lists {servers}, the replicas are {sorted(wx)}")
    with open(os.path.join(directory, "gateway.toml"), encoding="utf-8") as f:
        gw = f.read()
    listen = re.search(r'^listen\s*=\s*"[^"]*:(\d+)"', gw, re.M)
    for h, port in servers:
        if not listen or port != listen.group(1):
            problems.append(f"nginx sends to {h}:{port}, wxgate listens on {listen and listen.group(1)}")
    published = re.search(r"^\s*listen\s+(\d+);", conf, re.M)
    if nginx and published and not any(str(p).endswith(":" + published.group(1)) for p in nginx.get("ports") or []):
        problems.append(f"nginx listens on {published.group(1)} but does not publish it")
    return problems, {"replicas": sorted(wx), "nginx_servers": servers}


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    problems, out = {"k8s": lambda: cmd_k8s(args[0]),
                     "compose": lambda: cmd_compose(args[0]),
                     "metrics": lambda: cmd_metrics(args)}[cmd]()
    print(json.dumps(out, ensure_ascii=False))
    for p in problems:
        print(p, file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
