//! What a newcomer meets first, through the real `wxgate` binary (issues #10 and #12): `demo`
//! starts when its default ports are taken, `cert` never overwrites a key silently, `check`
//! prints an aligned table without meaningless settings, access lines name an upstream only
//! when the request went there and carry durations without float noise, and `healthcheck`
//! probes a running gateway.

mod common;
#[path = "common/gw.rs"]
mod gw;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{binary_path, dead_port, eventually, spawn_binary, spawn_binary_with_log, WAIT};

/// Runs the binary with `args` (no config from the environment), bounded by [`WAIT`].
fn run(args: &[&str], cwd: &Path) -> Output {
    let child = Command::new(binary_path())
        .args(args)
        .current_dir(cwd)
        .env_remove("WXGATE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wxgate");
    wait_output(child, WAIT)
}

/// `wait_with_output` with a deadline: a hung child is killed and the test fails.
fn wait_output(mut child: std::process::Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "wxgate did not exit within {limit:?}: {:?}",
                child.wait_with_output()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Sends SIGTERM to a child we started, by its pid.
fn sigterm(child: &std::process::Child) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -TERM failed");
}

// ---------------------------------------------------------------------------------------------
// demo
// ---------------------------------------------------------------------------------------------

/// A running `wxgate demo`: its stdout so far; SIGTERM and reaped on drop.
struct DemoChild {
    child: std::process::Child,
    stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for DemoChild {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            sigterm(&self.child);
            let deadline = Instant::now() + WAIT;
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl DemoChild {
    fn start(args: &[&str]) -> DemoChild {
        let mut child = Command::new(binary_path())
            .arg("demo")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn wxgate demo");
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let pipe = child.stdout.take().unwrap();
        let lines = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
        DemoChild { child, stdout }
    }

    fn lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// The URL printed on the line starting with `label` (e.g. "Gateway").
    fn url(&self, label: &str) -> String {
        let lines = self.lines();
        let line = lines
            .iter()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label} line in {lines:#?}"));
        line.split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("no URL on {line:?}"))
            .to_string()
    }
}

/// Binds `addr` for the test's duration; `None` if something else holds it already, which
/// serves the test as well: either way the port is taken.
fn occupy(addr: &str) -> Option<std::net::TcpListener> {
    std::net::TcpListener::bind(addr).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_moves_off_taken_default_ports_and_prints_the_urls_it_uses() {
    let _sim_port = occupy("127.0.0.1:9000");
    let _gw_port = occupy("127.0.0.1:8080");
    let mut demo = DemoChild::start(&[]);
    let started = |d: &DemoChild| d.lines().iter().any(|l| l.contains("Press Ctrl-C"));
    let deadline = Instant::now() + WAIT;
    while !started(&demo) {
        if let Some(st) = demo.child.try_wait().unwrap() {
            panic!("wxgate demo exited with {st} instead of falling back to free ports");
        }
        assert!(
            Instant::now() < deadline,
            "demo did not start: {:#?}",
            demo.lines()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gateway = demo.url("Gateway");
    let simulator = demo.url("Simulator");
    assert!(gateway.starts_with("http://127.0.0.1:"), "{gateway}");
    assert_ne!(gateway, "http://127.0.0.1:8080", "8080 is taken");
    assert_ne!(simulator, "http://127.0.0.1:9000", "9000 is taken");
    let out = demo.lines().join("\n");
    assert!(
        out.contains("127.0.0.1:8080 is in use") && out.contains("127.0.0.1:9000 is in use"),
        "the move is reported: {out}"
    );
    assert!(out.contains(&format!("Open {gateway}/")), "{out}");

    // The README's silent path, through the printed gateway URL: WeChat UA → gateway 302 →
    // simulator's authorize page 302 → gateway callback 302 → the demo upstream's page.
    let mut b = gw::Browser::wechat();
    let mut url = format!("{gateway}/");
    let mut hops = Vec::new();
    let page = loop {
        let r = b.get(&url).await;
        hops.push(format!("{} {url}", r.status));
        if r.status != 302 {
            break r;
        }
        assert!(hops.len() < 10, "redirect loop: {hops:#?}");
        let loc = r.location().expect("Location");
        // A browser never sends the fragment (`#wechat_redirect`).
        let loc = loc.split('#').next().unwrap().to_string();
        url = if loc.starts_with('/') {
            format!("{gateway}{loc}")
        } else {
            loc
        };
    };
    assert_eq!(page.status, 200, "{hops:#?}\n{}", page.body);
    assert!(
        hops.iter().any(|h| h.contains(&simulator)),
        "the login went through the printed simulator: {hops:#?}"
    );
    assert!(
        page.body.contains("Hello from the upstream"),
        "{}",
        page.body
    );
    assert!(page.body.contains("id=\"openid\""), "{}", page.body);
    assert!(
        page.body.contains("signature verified"),
        "the demo upstream verified the JWT: {}",
        page.body
    );

    sigterm(&demo.child);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(st) = demo.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "demo did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
}

#[test]
fn demo_refuses_a_taken_address_the_user_gave() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    for (flag, other) in [("--listen", "--sim-listen"), ("--sim-listen", "--listen")] {
        let out = run(&["demo", flag, &taken, other, "127.0.0.1:0"], dir.path());
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{flag}: {stderr}");
        assert!(
            stderr.contains(&taken),
            "{flag}: names the address: {stderr}"
        );
        assert!(
            stderr.contains("already in use"),
            "{flag}: says why: {stderr}"
        );
        assert!(stderr.contains(flag), "{flag}: names the flag: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{flag}: one line: {stderr}");
    }
}

// ---------------------------------------------------------------------------------------------
// cert
// ---------------------------------------------------------------------------------------------

#[test]
fn cert_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = (dir.path().join("d/a.crt"), dir.path().join("d/a.key"));
    let args = |force: bool| {
        let mut a = vec![
            "cert".to_string(),
            "--cert".into(),
            crt.display().to_string(),
            "--key".into(),
            key.display().to_string(),
        ];
        if force {
            a.push("--force".into());
        }
        a
    };
    let call = |force: bool| {
        let a = args(force);
        run(
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
            dir.path(),
        )
    };

    let out = call(false);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (crt1, key1) = (std::fs::read(&crt).unwrap(), std::fs::read(&key).unwrap());

    // Again: refused, one clear line, nothing written.
    let out = call(false);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "a second run must refuse: {stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert!(stderr.contains(&key.display().to_string()), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(std::fs::read(&crt).unwrap(), crt1, "certificate untouched");
    assert_eq!(std::fs::read(&key).unwrap(), key1, "key untouched");

    // A key alone is protected too, and the missing certificate is not written either.
    std::fs::remove_file(&crt).unwrap();
    let out = call(false);
    assert!(!out.status.success(), "{}", text(&out.stderr));
    assert!(!crt.exists(), "nothing written");
    assert_eq!(std::fs::read(&key).unwrap(), key1, "key untouched");

    // With --force: both replaced.
    let out = call(true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(crt.exists());
    assert_ne!(std::fs::read(&key).unwrap(), key1, "a fresh key");
}

// ---------------------------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------------------------

#[test]
fn check_aligns_routes_and_shows_non_wechat_only_where_auth_applies() {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = gw::gateway_toml(
        &gw::GwConfig::default(),
        "http://127.0.0.1:9",
        "http://127.0.0.1:3000",
        dir.path(),
    );
    toml.push_str(
        "\n[[route]]\nname = \"shop\"\nhost = \"h5.example.com\"\npath = \"/static\"\n\
         upstream = \"http://127.0.0.1:3001/assets\"\nauth = \"off\"\n",
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    let out = run(&["check", "-c", &path.display().to_string()], dir.path());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let routes: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("routes"))
        .skip(1)
        .collect();
    let names: Vec<&str> = routes
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert!(
        names.contains(&"shop") && names.contains(&"main"),
        "{stdout}"
    );

    // Every column starts at the same place on every line, host or not.
    let col = |needle: &str| -> Vec<usize> {
        routes
            .iter()
            .map(|l| {
                l.find(needle)
                    .unwrap_or_else(|| panic!("{needle:?} in {l:?}"))
            })
            .collect()
    };
    for needle in [" -> ", " auth="] {
        let at = col(needle);
        assert!(
            at.windows(2).all(|w| w[0] == w[1]),
            "{needle:?} at {at:?}:\n{stdout}"
        );
    }
    let shop = routes
        .iter()
        .find(|l| l.trim_start().starts_with("shop"))
        .unwrap();
    assert!(shop.contains("h5.example.com/static"), "{shop}");
    assert!(shop.contains("-> http://127.0.0.1:3001/assets"), "{shop}");
    let matches_col = routes[0]
        .find("*/")
        .or_else(|| routes[0].find("h5."))
        .unwrap();
    assert!(
        routes.iter().all(|l| {
            let rest = &l[matches_col..];
            rest.starts_with("*/") || rest.starts_with("h5.example.com/")
        }),
        "the match column is aligned:\n{stdout}"
    );

    // non_wechat (and api) only where a visitor can be asked to log in.
    for line in &routes {
        if line.contains("auth=off") {
            assert!(!line.contains("non_wechat="), "{line}");
            assert!(!line.contains("api="), "{line}");
        } else {
            assert!(line.contains("non_wechat="), "{line}");
        }
    }
    let main = routes
        .iter()
        .find(|l| l.trim_start().starts_with("main "))
        .unwrap();
    assert!(
        main.contains("auth=required non_wechat=deny api=false"),
        "{main}"
    );
    let pass = routes
        .iter()
        .find(|l| l.trim_start().starts_with("pass "))
        .unwrap();
    assert!(pass.contains("non_wechat=pass"), "{pass}");
}

// ---------------------------------------------------------------------------------------------
// Access log
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lines_name_an_upstream_only_when_the_request_went_there() {
    let sim = wxgate::simulator::start(
        wxgate::simulator::SimConfig::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let echo = gw::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = gw::gateway_toml(
        &gw::GwConfig::default(),
        &sim.url(),
        &echo.url(),
        dir.path(),
    );
    let mut bin = spawn_binary_with_log(&toml, "info");
    let base = format!("http://{}", bin.addr);

    let mut wechat = gw::Browser::wechat();
    let mut desktop = gw::Browser::new(gw::DESKTOP_UA);
    // (request id, what the gateway answers, route, forwarded?)
    let cases: [(&str, &str, &str, u16, &str, bool); 5] = [
        ("nl-login", "wechat", "/page", 302, "main", false),
        ("nl-deny", "desktop", "/page", 403, "main", false),
        ("nl-api", "wechat", "/api/x", 401, "api", false),
        ("nl-own", "wechat", "/_wxgate/healthz", 200, "-", false),
        ("nl-off", "wechat", "/off/x", 200, "off", true),
    ];
    for (id, who, path, status, _, _) in cases {
        let b = if who == "wechat" {
            &mut wechat
        } else {
            &mut desktop
        };
        let extra: &[(&str, &str)] = if path.starts_with("/api") {
            &[("x-request-id", id), ("accept", "application/json")]
        } else {
            &[("x-request-id", id)]
        };
        let r = b
            .send(reqwest::Method::GET, &format!("{base}{path}"), extra)
            .await;
        assert_eq!(r.status, status, "{id}: {r:?}");
    }
    // And a logged-in request, forwarded with identity.
    let start = wechat.get(&format!("{base}/page")).await;
    let cb = gw::authorize(&mut wechat, &start.location().unwrap(), "alice").await;
    assert_eq!(wechat.get(&cb).await.status, 302);
    let r = wechat
        .send(
            reqwest::Method::GET,
            &format!("{base}/page"),
            &[("x-request-id", "nl-in")],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");

    let access = |lines: &[String]| -> Vec<(String, serde_json::Value)> {
        lines
            .iter()
            .filter_map(|l| {
                Some((
                    l.clone(),
                    serde_json::from_str::<serde_json::Value>(l).ok()?,
                ))
            })
            .filter(|(_, v)| v["target"] == "wxgate::access")
            .collect()
    };
    let find = |id: &str| {
        access(&bin.stderr_lines())
            .into_iter()
            .find(|(_, v)| v["request_id"] == id)
    };
    eventually(WAIT, "the last access line", || find("nl-in").is_some()).await;
    for (id, _, _, _, route, forwarded) in cases {
        let (_, v) = find(id).unwrap_or_else(|| panic!("no access line for {id}"));
        assert_eq!(v["route"], route, "{id}: {v}");
        let want = if forwarded {
            echo.url()
        } else {
            "-".to_string()
        };
        assert_eq!(v["upstream"], want, "{id}: {v}");
    }
    let (_, v) = find("nl-in").unwrap();
    assert_eq!(
        (v["route"].as_str(), v["upstream"].as_str()),
        (Some("main"), Some(echo.url().as_str())),
        "{v}"
    );

    // Durations: three decimals, still a JSON number, on every line.
    for (line, v) in access(&bin.stderr_lines()) {
        assert!(v["duration_ms"].is_number(), "{line}");
        let raw = line
            .split("\"duration_ms\":")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap_or_else(|| panic!("{line}"));
        let decimals = raw
            .split('.')
            .nth(1)
            .unwrap_or_else(|| panic!("{raw}: {line}"));
        assert!(
            decimals.len() == 3 && decimals.bytes().all(|b| b.is_ascii_digit()),
            "three decimals, got {raw}: {line}"
        );
    }
    bin.sigterm();
    assert!(tokio::task::block_in_place(|| bin.wait_exit(WAIT)).success());
    sim.shutdown();
}

// ---------------------------------------------------------------------------------------------
// healthcheck
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_0_on_a_live_gateway_and_1_otherwise() {
    let up = common::Echo::start().await;
    let bin = spawn_binary(&common::simple_config(&up.url()));
    let dir = tempfile::tempdir().unwrap();
    let healthz = format!("http://{}/_wxgate/healthz", bin.addr);

    let check = |args: Vec<String>| {
        let dir = dir.path().to_path_buf();
        tokio::task::block_in_place(move || {
            let mut a = vec!["healthcheck".to_string()];
            a.extend(args);
            run(&a.iter().map(String::as_str).collect::<Vec<_>>(), &dir)
        })
    };
    let out = check(vec!["--url".into(), healthz.clone()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains(&healthz) && stdout.contains("200"),
        "{stdout}"
    );

    // Nothing listening: exit 1, one line naming the URL.
    let dead = format!("http://{}/_wxgate/healthz", dead_port());
    let out = check(vec!["--url".into(), dead.clone()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("unhealthy: ") && stderr.contains(&dead),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    // A live gateway that does not answer 2xx is unhealthy too.
    let out = check(vec![
        "--url".into(),
        format!("http://{}/_wxgate/no-such-endpoint", bin.addr),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));

    // No --url and no config file: the documented default.
    let out = check(vec![]);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        all.contains("http://127.0.0.1:8080/_wxgate/healthz"),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_derives_the_url_from_the_configs_wildcard_listen() {
    let up = common::Echo::start().await;
    let port = dead_port().port();
    let toml = common::simple_config(&up.url()).replace("127.0.0.1:0", &format!("0.0.0.0:{port}"));
    let bin = spawn_binary(&toml);
    assert_eq!(bin.addr.port(), port);
    let config = bin.dir.path().join("gateway.toml");
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::task::block_in_place(|| {
        run(
            &["healthcheck", "-c", &config.display().to_string()],
            dir.path(),
        )
    });
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("http://127.0.0.1:{port}/_wxgate/healthz")),
        "0.0.0.0 is probed on loopback: {stdout}"
    );

    // A config that does not load is unhealthy (exit 1), not a crash.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server\n").unwrap();
    let out = tokio::task::block_in_place(|| {
        run(
            &["healthcheck", "-c", &bad.display().to_string()],
            dir.path(),
        )
    });
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("bad.toml"),
        "{}",
        text(&out.stderr)
    );
}
