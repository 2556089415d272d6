//! What the real `wxgate run` binary logs during logins, good and bad: WeChat errors are
//! logged with their errcode (configuration errors at error level), and no log line ever
//! contains a code, a state, a token, the AppSecret, a session cookie or a JWT.
//! The binary runs against the in-process simulator and echo upstream; its stderr is captured.

#[path = "common/gw.rs"]
mod gw;
#[path = "common/sim.rs"]
mod sim;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gw::{Browser, GwConfig};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use wxgate::simulator::{Fault, SimHandle, DEFAULT_APPID, DEFAULT_SECRET};

/// The binary's stderr, line by line, as it arrives.
struct Captured {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Captured {
    fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Stops the child (by its own handle) and returns everything it wrote.
    async fn finish(mut self) -> Vec<String> {
        self.child
            .start_kill()
            .expect("kill the gateway we started");
        let _ = tokio::time::timeout(gw::LIMIT, self.child.wait()).await;
        let _ = tokio::time::timeout(gw::LIMIT, self.reader).await;
        let lines = self.lines.lock().unwrap().clone();
        lines
    }
}

/// Starts `wxgate --log-format json run -c FILE` with `WXGATE_LOG=level`; returns it with the
/// address it listens on (taken from its "wxgate listening" line).
async fn start_binary(config: &std::path::Path, level: &str) -> (Captured, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wxgate"))
        .args(["--log-format", "json", "run", "-c"])
        .arg(config)
        .env("WXGATE_LOG", level)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("wxgate binary starts");
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let reader = tokio::spawn(async move {
        let mut r = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = r.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    let cap = Captured {
        child,
        lines,
        reader,
    };
    let addr = tokio::time::timeout(gw::LIMIT, async {
        loop {
            for l in cap.snapshot() {
                if let Ok(v) = serde_json::from_str::<Value>(&l) {
                    if v["message"] == "wxgate listening" {
                        return v["addr"].as_str().expect("addr field").to_string();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no 'wxgate listening' line: {:#?}", cap.snapshot()));
    (cap, format!("http://{addr}"))
}

/// Everything secret that went past the gateway during the scenario.
#[derive(Default)]
struct Secrets {
    codes: Vec<String>,
    states: Vec<String>,
    cookies: Vec<String>,
    jwts: Vec<String>,
    global_token: String,
}

async fn login_by_hand(
    b: &mut Browser,
    base: &str,
    path: &str,
    user: &str,
    sec: &mut Secrets,
) -> gw::Resp {
    let start = b.get(&format!("{base}{path}")).await;
    assert_eq!(start.status, 302, "{start:?}");
    let cb = gw::authorize(b, &start.location().unwrap(), user).await;
    sec.codes.push(gw::query_param(&cb, "code").unwrap());
    sec.states.push(gw::query_param(&cb, "state").unwrap());
    for c in start.set_cookies() {
        sec.cookies.push(c.value().to_string());
    }
    let done = b.get(&cb).await;
    for c in done.set_cookies() {
        if !c.value().is_empty() {
            sec.cookies.push(c.value().to_string());
        }
    }
    done
}

async fn scenario(s: &SimHandle, base: &str) -> Secrets {
    let mut sec = Secrets::default();

    // A login whose token fetch is refused (IP whitelist, 40164): logged loudly, the session
    // comes without unionid.
    s.inject(Fault::errcode("/cgi-bin/stable_token", 40164, 1));
    let mut early = Browser::wechat();
    assert_eq!(
        login_by_hand(&mut early, base, "/", "alice", &mut sec)
            .await
            .status,
        302
    );
    sec.cookies.extend(early.jar.values().cloned());

    // A good login (follower: global token + user/info), then pages with the JWT.
    let mut alice = Browser::wechat();
    let done = login_by_hand(&mut alice, base, "/page?x=1", "alice", &mut sec).await;
    assert_eq!(done.status, 302, "{done:?}");
    for path in ["/page?x=1", "/api/list", "/opt/y"] {
        let seen = alice.get(&format!("{base}{path}")).await.seen();
        sec.jwts.push(seen.header("x-wechat-jwt").expect("JWT"));
    }
    assert_eq!(
        alice.get(&format!("{base}/_wxgate/session")).await.status,
        200
    );

    // A tampered state (round failed), then the loop guard's error page.
    let mut eve = Browser::wechat();
    let start = eve.get(&format!("{base}/page")).await;
    let cb = gw::authorize(&mut eve, &start.location().unwrap(), "bob").await;
    sec.codes.push(gw::query_param(&cb, "code").unwrap());
    let forged = cb.replace("state=", "state=X");
    assert_eq!(eve.get(&forged).await.status, 302);

    // WeChat rejects the code (40029), the secret (40125), or fails (-1, 5xx, timeout).
    for (fault, status) in [
        (Fault::errcode("/sns/oauth2/access_token", 40029, 1), 302),
        (Fault::errcode("/sns/oauth2/access_token", 40125, 1), 502),
        (Fault::errcode("/sns/oauth2/access_token", 40013, 1), 502),
        (Fault::errcode("/sns/oauth2/access_token", 40164, 1), 502),
        (Fault::errcode("/sns/oauth2/access_token", 45009, 1), 503),
        (Fault::errcode("/sns/oauth2/access_token", -1, 1), 503),
        (Fault::http_status("/sns/oauth2/access_token", 502, 1), 503),
        (
            Fault::latency(
                "/sns/oauth2/access_token",
                2500,
                wxgate::simulator::FaultCount::Calls(1),
            ),
            503,
        ),
    ] {
        let mut b = Browser::wechat();
        let start = b.get(&format!("{base}/page")).await;
        let cb = gw::authorize(&mut b, &start.location().unwrap(), "bob").await;
        sec.codes.push(gw::query_param(&cb, "code").unwrap());
        sec.states.push(gw::query_param(&cb, "state").unwrap());
        s.inject(fault);
        let r = b.get(&cb).await;
        s.clear_faults();
        assert_eq!(r.status, status, "{r:?}");
    }

    // A unionid lookup whose token is refused (40001: one re-fetch).
    s.inject(Fault::errcode("/cgi-bin/user/info", 40001, 1));
    let mut b = Browser::wechat();
    assert_eq!(
        login_by_hand(&mut b, base, "/", "alice", &mut sec)
            .await
            .status,
        302
    );

    // 401s, logout, spoofed headers.
    let r = alice
        .send(
            reqwest::Method::POST,
            &format!("{base}/page"),
            &[
                ("x-wechat-openid", "forged"),
                ("authorization", "Bearer leaked-token-value"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    let mut anon = Browser::wechat();
    assert_eq!(
        anon.send(reqwest::Method::POST, &format!("{base}/page"), &[])
            .await
            .status,
        401
    );
    assert_eq!(
        alice.get(&format!("{base}/_wxgate/logout")).await.status,
        302
    );

    sec.cookies.extend(alice.jar.values().cloned());
    sec.cookies.extend(b.jar.values().cloned());
    // Stable tokens are shared while valid: this is the gateway's global token.
    let t = sim::stable_token(s, DEFAULT_APPID, DEFAULT_SECRET, false).await;
    sec.global_token = t["access_token"]
        .as_str()
        .expect("global token")
        .to_string();
    sec
}

fn check_logs(lines: &[String], sec: &Secrets, level: &str) {
    let all = lines.join("\n");
    assert!(lines.len() > 10, "{level}: logs were captured: {all}");
    assert!(
        all.contains("/_wxgate/callback"),
        "{level}: access log lines present"
    );
    let mut forbidden: Vec<(&str, String)> = vec![
        ("AppSecret", DEFAULT_SECRET.to_string()),
        ("session secret", gw::SESSION_SECRET.to_string()),
        ("global token", sec.global_token.clone()),
        ("client Authorization", "leaked-token-value".to_string()),
    ];
    forbidden.extend(sec.codes.iter().map(|c| ("code", c.clone())));
    forbidden.extend(sec.states.iter().map(|c| ("state", c.clone())));
    forbidden.extend(
        sec.cookies
            .iter()
            .filter(|c| c.len() > 8)
            .map(|c| ("cookie", c.clone())),
    );
    for jwt in &sec.jwts {
        forbidden.push(("JWT", jwt.clone()));
        forbidden.push(("JWT signature", jwt.rsplit('.').next().unwrap().to_string()));
    }
    assert!(sec.codes.len() >= 8 && sec.jwts.len() == 3 && sec.global_token.len() > 50);
    for (what, value) in &forbidden {
        assert!(!value.is_empty());
        if let Some(line) = lines.iter().find(|l| l.contains(value.as_str())) {
            panic!("{level}: a {what} appears in the log: {line}");
        }
    }
    // Nothing that looks like a WeChat token (sns 107 / global 136 chars of [A-Za-z0-9_-]).
    for line in lines {
        let mut run = 0;
        for c in line.chars() {
            run = if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                run + 1
            } else {
                0
            };
            assert!(run < 100, "{level}: a token-like value in the log: {line}");
        }
    }

    let events: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let with_code = |code: i64| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["errcode"].as_i64() == Some(code))
            .collect()
    };
    for (code, want_level) in [
        (40029, "WARN"),
        (-1, "WARN"),
        (45009, "WARN"),
        (40125, "ERROR"),
        (40013, "ERROR"),
        (40164, "ERROR"),
    ] {
        let found = with_code(code);
        assert!(
            !found.is_empty(),
            "{level}: errcode {code} is logged: {all}"
        );
        assert!(
            found.iter().any(|e| e["level"] == want_level),
            "{level}: errcode {code} at {want_level}: {found:?}"
        );
    }
    assert!(
        events.iter().any(|e| e["level"] == "ERROR"
            && e["errcode"] == 40164
            && e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("unionid lookup failed"))),
        "{level}: a refused token fetch is logged at ERROR: {all}"
    );
    assert!(
        events.iter().any(|e| e["message"] == "login round failed"),
        "{level}: the failed round is logged"
    );
    // A timeout and an HTTP 5xx are logged as such, without an errcode (0 would read as
    // WeChat's "ok").
    for cause in ["did not answer in time", "HTTP 502"] {
        let found: Vec<&Value> = events
            .iter()
            .filter(|e| e["message"] == "code exchange failed")
            .filter(|e| e["error"].as_str().is_some_and(|m| m.contains(cause)))
            .collect();
        assert!(!found.is_empty(), "{level}: {cause:?} logged: {all}");
        assert!(
            found.iter().all(|e| e.get("errcode").is_none()),
            "{level}: {found:?}"
        );
    }
}

async fn run_at(level: &str) {
    let s = sim::start_default().await;
    let echo = gw::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = GwConfig {
        timeout: "1s",
        ..GwConfig::default()
    };
    let toml = gw::gateway_toml(&cfg, &s.url(), &echo.url(), dir.path());
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    let (cap, base) = start_binary(&path, level).await;
    let sec = tokio::time::timeout(Duration::from_secs(60), scenario(&s, &base))
        .await
        .expect("scenario finishes");
    // Let the last access-log lines arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = cap.finish().await;
    if std::env::var_os("WXGATE_TEST_SHOW_LOGS").is_some() {
        eprintln!("{}", lines.join("\n"));
    }
    check_logs(&lines, &sec, level);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_at_info_carry_errcodes_and_no_secrets() {
    run_at("info").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_at_debug_and_trace_carry_no_secrets() {
    run_at("debug").await;
    run_at("trace").await;
}
