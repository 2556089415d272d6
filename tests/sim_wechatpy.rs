//! Runs Python's wechatpy (a client nobody here wrote) against the simulator: the whole
//! snsapi_base and snsapi_userinfo exchange, refresh, userinfo, sns/auth, cgi-bin/token and
//! user/info. The interpreter is `$WXGATE_TEST_PYTHON` (default `python3`); it must have
//! `wechatpy` and `cryptography` installed (./scripts/test.sh makes a venv in target/pyenv).

#[path = "common/sim.rs"]
mod sim;

use std::process::Command;
use wxgate::simulator::{DEFAULT_APPID, DEFAULT_SECRET};

const INSTALL_HINT: &str = "wechatpy missing: run ./scripts/test.sh, or pip install wechatpy cryptography into $WXGATE_TEST_PYTHON's environment \
(e.g. python3 -m venv target/pyenv && target/pyenv/bin/pip install wechatpy cryptography && export WXGATE_TEST_PYTHON=$PWD/target/pyenv/bin/python)";

#[test]
fn wechatpy_is_installed() {
    sim::require_python_modules("wechatpy, cryptography, requests", INSTALL_HINT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechatpy_runs_the_whole_web_authorization_against_the_simulator() {
    let s = sim::start_default().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/test_wechatpy.py");
    let py = sim::python();
    let url = s.url();
    // The simulator keeps serving on the runtime while the blocking child runs.
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&py)
            .args([script, &url, DEFAULT_APPID, DEFAULT_SECRET])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {py}: {e}. {INSTALL_HINT}"))
    })
    .await
    .expect("python runner");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() != Some(3), "{INSTALL_HINT}\n{stderr}");
    assert!(
        out.status.success(),
        "wechatpy checks failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    println!("{stdout}");
    assert!(stdout.contains("wechatpy: all checks passed"), "{stdout}");
    // wechatpy really went through the simulator.
    let stats = s.stats();
    assert!(
        stats.get("/sns/oauth2/access_token").copied().unwrap_or(0) >= 3,
        "{stats:?}"
    );
    assert_eq!(stats.get("/cgi-bin/token"), Some(&2), "{stats:?}");
    assert!(stats.contains_key("/sns/oauth2/refresh_token"), "{stats:?}");
}
