//! The binary and its configuration as an operator meets them: `wxgate check` and `run` print
//! every error of a file, one line each, and exit 78; a TOML syntax error keeps toml's position
//! and caret; secrets read from files log a user in through the simulator; and `[log] level`
//! decides what is logged unless `WXGATE_LOG` says otherwise.

#[path = "common/gw.rs"]
mod gw;
#[path = "common/sim.rs"]
mod sim;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gw::{Browser, GwConfig, HS_SECRET, SESSION_SECRET};
use wxgate::simulator::DEFAULT_SECRET;

const WAIT: Duration = Duration::from_secs(20);

fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wxgate"));
    cmd.env_remove("WXGATE_CONFIG").stdin(Stdio::null());
    cmd
}

/// Runs `wxgate <verb> -c <config>` to its end (bounded: a hung child is killed, the test fails).
fn wxgate(verb: &str, config: &Path) -> Output {
    let mut child = binary()
        .arg(verb)
        .arg("-c")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wxgate");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("wxgate {verb} did not exit: {:?}", child.wait_with_output());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_and_run_print_every_error_one_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    // Three errors in three places: a section, another section, and the second route.
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\nrequest_timeout = \"soon\"\n\n\
         [session]\nsecret = \"short\"\n\n\
         [[route]]\nname = \"a\"\nupstream = \"http://127.0.0.1:3000\"\n\n\
         [[route]]\nname = \"b\"\npath = \"/b\"\nupstream = \"ftp://127.0.0.1:3001\"\n",
    )
    .unwrap();
    let prefix = format!("wxgate: config error: {}: ", path.display());
    for verb in ["check", "run"] {
        let out = wxgate(verb, &path);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{verb}: {stderr}");
        assert!(out.stdout.is_empty(), "{verb}: {}", text(&out.stdout));
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 3, "{verb}: one line per error:\n{stderr}");
        let expected = [
            ("server.request_timeout", "invalid duration \"soon\""),
            ("session.secret", "must be at least 32 bytes"),
            ("route[1].upstream", "scheme \"ftp\" is not supported"),
        ];
        for (line, (key, reason)) in lines.iter().zip(expected) {
            assert!(
                line.starts_with(&format!("{prefix}{key}: ")) && line.contains(reason),
                "{verb}: expected {key}: {reason} in {line:?}"
            );
        }
        assert!(
            !stderr.contains("short\""),
            "the secret itself is never shown"
        );
    }
}

#[test]
fn a_syntax_error_keeps_its_position_and_caret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, "[server]\nlisten = \n").unwrap();
    let out = wxgate("check", &path);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    let mut lines = stderr.lines();
    assert_eq!(
        lines.next(),
        Some(
            format!(
                "wxgate: config error: {}: TOML parse error at line 2, column 10",
                path.display()
            )
            .as_str()
        ),
        "{stderr}"
    );
    assert!(stderr.contains("2 | listen = \n"), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.trim_end().ends_with('^')),
        "a caret under the position: {stderr}"
    );
}

/// A `wxgate --log-format json run` child: killed if the test ends without stopping it.
struct Running {
    child: Child,
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Running {
    /// Starts `wxgate run -c config` and waits (bounded) for its "wxgate listening" line.
    /// `log` sets `WXGATE_LOG`; `None` removes it.
    fn start(config: &Path, log: Option<&str>) -> Running {
        let mut cmd = binary();
        cmd.args(["--log-format", "json", "run", "-c"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match log {
            Some(filter) => cmd.env("WXGATE_LOG", filter),
            None => cmd.env_remove("WXGATE_LOG"),
        };
        let mut child = cmd.spawn().expect("spawn wxgate run");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if line.contains("wxgate listening") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let line = match rx.recv_timeout(WAIT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("wxgate did not start: {:?}", lines.lock().unwrap());
            }
        };
        let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
        let addr = v["addr"].as_str().expect("addr").parse().expect("addr");
        Running { child, addr, lines }
    }

    /// SIGTERM, then waits (bounded) for a clean exit; returns every stderr line.
    fn stop(mut self) -> Vec<String> {
        let st = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill (procps)");
        assert!(st.success(), "kill -TERM failed");
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "wxgate did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{status:?}");
        // The reader thread sees end-of-file once the process is gone.
        let deadline = Instant::now() + WAIT;
        while Arc::strong_count(&self.lines) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let lines = self.lines.lock().unwrap().clone();
        lines
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn write_secret(dir: &Path, name: &str, secret: &str) -> PathBuf {
    let path = dir.join(name);
    // As `echo secret > file` writes it: with a trailing newline, which must not count.
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_from_files_log_a_user_in() {
    let sim = sim::start_default().await;
    let echo = gw::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = GwConfig {
        algorithm: "HS256",
        ..GwConfig::default()
    };
    let inline = gw::gateway_toml(&cfg, &sim.url(), &echo.url(), dir.path());
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    write_secret(dir.path(), "secrets/appsecret", DEFAULT_SECRET);
    write_secret(dir.path(), "secrets/session", SESSION_SECRET);
    let jwt_file = write_secret(dir.path(), "secrets/jwt", HS_SECRET);
    // AppSecret and session key relative to the config's directory; the JWT secret absolute.
    let toml = inline
        .replace(
            &format!("secret = \"{DEFAULT_SECRET}\""),
            "secret = { file = \"secrets/appsecret\" }",
        )
        .replace(
            &format!("secret = [\"{SESSION_SECRET}\"]"),
            "secret = [{ file = \"secrets/session\" }]",
        )
        .replace(
            &format!("secret = \"{HS_SECRET}\""),
            &format!("secret = {{ file = {:?} }}", jwt_file.display().to_string()),
        );
    for secret in [DEFAULT_SECRET, SESSION_SECRET, HS_SECRET] {
        assert!(
            !toml.contains(secret),
            "every secret comes from a file:\n{toml}"
        );
    }
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, &toml).unwrap();

    let out = wxgate("check", &config);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for secret in [DEFAULT_SECRET, SESSION_SECRET, HS_SECRET] {
        assert!(!stdout.contains(secret), "check prints no secret: {stdout}");
    }

    // The real thing: the simulator accepts the AppSecret (exactly, without the newline), the
    // session cookie opens with the file's key, and the JWT verifies with the file's secret.
    let gateway = Running::start(&config, Some("debug"));
    let base = format!("http://{}", gateway.addr);
    let mut b = Browser::wechat();
    let start = b.get(&format!("{base}/page")).await;
    assert_eq!(start.status, 302, "{start:?}");
    let authorize = start.location().expect("Location");
    let login = gw::login_from(&mut b, start, authorize, "alice").await;
    assert_eq!(
        login.done.status, 302,
        "the code exchange worked: {:?}",
        login.done
    );
    assert!(b.cookie("wxgate_session").is_some());
    let page = b.get(&format!("{base}/page")).await;
    assert_eq!(page.status, 200, "{page:?}");
    let seen = page.seen();
    assert!(seen.header("x-wechat-openid").is_some(), "{:?}", seen.0);
    let jwt = seen.header("x-wechat-jwt").expect("a JWT");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["echo-upstream"]);
    validation.set_issuer(&["wxgate-test"]);
    jsonwebtoken::decode::<serde_json::Value>(
        &jwt,
        &jsonwebtoken::DecodingKey::from_secret(HS_SECRET.as_bytes()),
        &validation,
    )
    .expect("signed with the secret from the file");
    let log = gateway.stop().join("\n");
    for secret in [DEFAULT_SECRET, SESSION_SECRET, HS_SECRET] {
        assert!(!log.contains(secret), "a secret in the debug log:\n{log}");
    }

    // A secret file that cannot be read is a config error naming the key and the path.
    std::fs::remove_file(dir.path().join("secrets/appsecret")).unwrap();
    let out = wxgate("check", &config);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    let expected = format!(
        "wxgate: config error: {}: wechat.secret: cannot read {}: ",
        config.display(),
        dir.path().join("secrets/appsecret").display()
    );
    assert!(
        stderr.starts_with(&expected),
        "expected {expected:?} in {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_level_from_the_file_unless_wxgate_log_says_otherwise() {
    let echo = gw::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    // Warnings only, except the server's own start-up line (the test learns the port from it).
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[log]\nlevel = \"warn,wxgate::server=info\"\n\n\
             [[route]]\nname = \"all\"\nupstream = {:?}\n",
            echo.url()
        ),
    )
    .unwrap();
    let access_lines = |log: Option<&str>| {
        let gateway = Running::start(&config, log);
        let url = format!("http://{}/x", gateway.addr);
        let status = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async { reqwest::get(url).await.map(|r| r.status().as_u16()) })
        })
        .join()
        .unwrap()
        .expect("request");
        assert_eq!(status, 200);
        let lines = gateway.stop();
        assert!(
            lines.iter().any(|l| l.contains("wxgate listening")),
            "{lines:?}"
        );
        lines
            .iter()
            .filter(|l| l.contains("\"target\":\"wxgate::access\""))
            .count()
    };
    let quiet = tokio::task::block_in_place(|| access_lines(None));
    assert_eq!(quiet, 0, "[log] level = \"warn,…\" hides the access log");
    let loud = tokio::task::block_in_place(|| access_lines(Some("info")));
    assert_eq!(loud, 1, "WXGATE_LOG overrides [log] level");
}

/// gateway.toml marks `reload: restart` at exactly the keys `restart_required` reports (TLS on
/// or off has its own sentence), so the documentation and the reload cannot disagree.
#[test]
fn gateway_toml_marks_exactly_the_keys_that_need_a_restart() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.toml"))
        .unwrap();
    // A mark, not the sentence that explains the marks (which quotes them).
    let marked = |block: &str| {
        block
            .match_indices("reload: restart")
            .any(|(i, _)| !block[..i].ends_with('"'))
    };
    let (mut section, mut section_marked) = (String::new(), false);
    let mut block = String::new();
    let mut keys = Vec::new();
    for line in text.lines() {
        let bare = line.trim_start_matches('#').trim();
        if line.trim().is_empty() {
            block.clear();
        } else if bare.starts_with('[') && bare.ends_with(']') && !bare.contains(' ') {
            section = bare.trim_matches(['[', ']']).to_string();
            section_marked = marked(&block);
            block.clear();
        } else if let Some((name, _)) = bare.split_once(" = ").filter(|(name, _)| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        }) {
            if section_marked || marked(&block) {
                keys.push(format!("{section}.{name}"));
            }
            block.clear();
        } else {
            block.push_str(bare);
            block.push('\n');
        }
    }
    let mut expected: Vec<String> = wxgate::config::RESTART_KEYS
        .iter()
        .filter(|k| **k != "server.tls")
        .map(|k| k.to_string())
        .collect();
    expected.sort();
    keys.sort();
    assert_eq!(keys, expected);
    assert!(
        text.contains("adding or removing [server.tls] (TLS on or off) needs a restart"),
        "server.tls"
    );
}
