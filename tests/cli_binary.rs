//! The `wxgate` binary: `check` and `run` exit 78 on every config error with one line naming
//! the file, the key and the reason; `check` prints the resolved routes; the JSON access log
//! has one line per request and never the query string or cookies.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

const MIN: &str = "[server]\nlisten = \"127.0.0.1:0\"\n\n[[route]]\nname = \"a\"\nupstream = \"http://127.0.0.1:3000\"\n";

fn wxgate(args: &[&str], config: &Path) -> Output {
    let mut cmd = Command::new(binary_path());
    cmd.args(args).arg("-c").arg(config);
    cmd.env_remove("WXGATE_TEST_SURELY_UNSET")
        .env_remove("WXGATE_CONFIG");
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn wxgate");
    wait_output(child, Duration::from_secs(20))
}

/// `wait_with_output` with a deadline: a hung child is killed and the test fails.
fn wait_output(mut child: std::process::Child, limit: Duration) -> Output {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "wxgate did not exit within {limit:?}: {:?}",
                child.wait_with_output()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_and_run_exit_78_naming_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown key",
            MIN.replace("listen =", "lisen = \"x\"\nlisten ="),
            "server.lisen",
            "unknown field `lisen`",
        ),
        (
            "bad duration",
            MIN.replace("[server]", "[server]\nrequest_timeout = \"soon\""),
            "server.request_timeout",
            "invalid duration \"soon\"",
        ),
        (
            "bad CIDR",
            MIN.replace("[server]", "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]"),
            "server.trusted_proxies[0]",
            "\"10.0.0.0/33\" is not a CIDR",
        ),
        (
            "missing env var",
            MIN.replace("name = \"a\"", "name = \"${WXGATE_TEST_SURELY_UNSET}\""),
            "route[0].name",
            "environment variable WXGATE_TEST_SURELY_UNSET is not set",
        ),
        (
            "duplicate route",
            format!("{MIN}\n[[route]]\nname = \"b\"\nupstream = \"http://127.0.0.1:3001\"\n"),
            "route[1].path",
            "duplicate route",
        ),
        (
            "bad listen",
            MIN.replace("127.0.0.1:0", "localhost:8080"),
            "server.listen",
            "invalid address \"localhost:8080\"",
        ),
        (
            "bad upstream scheme",
            MIN.replace("http://127.0.0.1:3000", "ftp://127.0.0.1:3000"),
            "route[0].upstream",
            "scheme \"ftp\" is not supported",
        ),
    ];
    for (i, (what, text, key, reason)) in cases.iter().enumerate() {
        let path = write(dir.path(), &format!("bad{i}.toml"), text);
        for cmd in ["check", "run"] {
            let out = wxgate(&[cmd], &path);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{cmd} / {what}: {stderr}");
            let line = format!("wxgate: config error: {}: {key}: ", path.display());
            assert!(
                stderr.contains(&line),
                "{cmd} / {what}: expected {line:?} in {stderr}"
            );
            assert!(
                stderr.contains(reason),
                "{cmd} / {what}: expected {reason:?} in {stderr}"
            );
            assert_eq!(
                stderr.lines().count(),
                1,
                "{cmd} / {what}: one line: {stderr}"
            );
            assert!(
                out.stdout.is_empty(),
                "{cmd} / {what}: {:?}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    // A file that is missing or not TOML is a config error too.
    let out = wxgate(&["check"], &dir.path().join("missing.toml"));
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml: cannot read"));
    let path = write(dir.path(), "syntax.toml", "[server\n");
    let out = wxgate(&["run"], &path);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("syntax.toml: "));
}

#[test]
fn check_prints_the_routes_in_match_order() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[server]\nlisten = \"127.0.0.1:8089\"\n\n\
        [[route]]\nname = \"catchall\"\nupstream = \"http://127.0.0.1:3000\"\n\n\
        [[route]]\nname = \"static\"\npath = \"/static\"\nupstream = \"http://127.0.0.1:3001/assets\"\n\n\
        [[route]]\nname = \"shop\"\nhost = \"h5.example.com\"\nupstream = \"http://127.0.0.1:3002\"\n";
    let path = write(dir.path(), "good.toml", text);
    let out = wxgate(&["check"], &path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("{}: OK\n", path.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("listen   http://127.0.0.1:8089"),
        "{stdout}"
    );
    let order: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("routes"))
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(order, ["shop", "static", "catchall"], "{stdout}");
    assert!(stdout.contains("h5.example.com/"), "{stdout}");
    assert!(stdout.contains("http://127.0.0.1:3001/assets"), "{stdout}");
    assert!(stdout.contains("auth=off"), "{stdout}");
}

#[test]
fn check_accepts_the_shipped_gateway_toml_with_its_env_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.toml"))
        .unwrap();
    let path = write(dir.path(), "gateway.toml", &text);
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(dir.path().join("certs/jwt.pem"), key.serialize_pem()).unwrap();
    let mut cmd = Command::new(binary_path());
    cmd.args(["check", "-c"])
        .arg(&path)
        .env("WECHAT_APPSECRET", "app-secret-value")
        .env(
            "WXGATE_SESSION_SECRET",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = wait_output(cmd.spawn().unwrap(), Duration::from_secs(20));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["shop", "api", "static"] {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(name)),
            "{name}: {stdout}"
        );
    }
    assert!(
        !stdout.contains("app-secret-value"),
        "check must not print secrets: {stdout}"
    );

    // Without the environment the same file is a config error.
    let out = Command::new(binary_path())
        .args(["check", "-c"])
        .arg(&path)
        .env_remove("WECHAT_APPSECRET")
        .env_remove("WXGATE_SESSION_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not set"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_has_one_line_and_no_query_or_cookie() {
    let up = Echo::start().await;
    // Debug level: nothing at any level may carry the secrets.
    let mut bin = spawn_binary_with_log(&simple_config(&up.url()), "debug");
    let resp = client()
        .get(format!(
            "http://{}/callback/page?code=SECRETCODE&state=S",
            bin.addr
        ))
        .header("cookie", "sid=COOKIEVALUE123; other=COOKIEVALUE456")
        .header("x-request-id", "log-test-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.unwrap();
    assert!(
        String::from_utf8_lossy(&body).contains("SECRETCODE"),
        "control: the upstream got the query"
    );

    let access = |lines: &[String]| -> Vec<serde_json::Value> {
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "wxgate::access")
            .collect()
    };
    eventually(WAIT, "an access log line", || {
        !access(&bin.stderr_lines()).is_empty()
    })
    .await;
    // A second request proves the first one's line is complete and alone.
    let resp = client()
        .get(format!("http://{}/_wxgate/healthz", bin.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    eventually(WAIT, "the second access line", || {
        access(&bin.stderr_lines()).len() >= 2
    })
    .await;
    bin.sigterm();
    assert!(tokio::task::block_in_place(|| bin.wait_exit(WAIT)).success());

    let lines = bin.stderr_lines();
    let entries = access(&lines);
    let mine: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|v| v["request_id"] == "log-test-1")
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "exactly one access line per request: {entries:?}"
    );
    let e = mine[0];
    assert_eq!(e["method"], "GET");
    assert_eq!(e["path"], "/callback/page");
    assert_eq!(e["status"], 200);
    assert_eq!(e["bytes"], body.len() as u64);
    assert_eq!(e["route"], "all");
    assert_eq!(entries.len(), 2, "{entries:?}");

    let all = lines.join("\n");
    for secret in [
        "SECRETCODE",
        "state=S",
        "code=",
        "COOKIEVALUE123",
        "COOKIEVALUE456",
        "sid=",
    ] {
        assert!(
            !all.contains(secret),
            "{secret:?} appears in the log:\n{all}"
        );
    }
}
