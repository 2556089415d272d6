//! Configuration loading as the library sees it: the shipped `gateway.toml` loads (with its
//! environment variables injected and a real JWT key next to it) and every error path names
//! the file, the dotted key and the reason.

use std::path::{Path, PathBuf};

use wxgate::app::Gateway;
use wxgate::config::{
    AuthMode, ConfigError, ConfigErrors, JwtAlgorithm, NonWechat, Settings, UnionIdMode,
};

const SESSION_SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn env(name: &str) -> Option<String> {
    match name {
        "WECHAT_APPSECRET" => Some("app-secret-from-env".to_string()),
        "WXGATE_SESSION_SECRET" => Some(SESSION_SECRET.to_string()),
        _ => None,
    }
}

/// The repository's gateway.toml copied into a temp dir, with `certs/jwt.pem` written.
fn shipped_config(with_key: bool) -> (tempfile::TempDir, PathBuf, String) {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.toml"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, &text).unwrap();
    if with_key {
        std::fs::create_dir(dir.path().join("certs")).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        std::fs::write(dir.path().join("certs/jwt.pem"), key.serialize_pem()).unwrap();
    }
    (dir, path, text)
}

#[test]
fn shipped_gateway_toml_loads() {
    let (dir, path, text) = shipped_config(true);
    let s = Settings::from_toml(&text, &path, dir.path(), &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(
        s.server.public_url.as_deref(),
        Some("https://h5.example.com")
    );
    assert_eq!(s.server.trusted_proxies.len(), 1);
    assert_eq!(s.server.max_request_header_bytes, 16384);
    let w = s.wechat.as_ref().unwrap();
    assert_eq!(w.appid, "wx0123456789abcdef");
    assert_eq!(w.secret.expose(), b"app-secret-from-env");
    assert_eq!(w.unionid, UnionIdMode::Follower);
    assert_eq!(
        w.verify_files
            .get("MP_verify_abc123.txt")
            .map(String::as_str),
        Some("abc123")
    );
    let session = s.session.as_ref().unwrap();
    assert_eq!(session.keys.len(), 1);
    assert_eq!(
        session.keys[0].expose(),
        b"0123456789abcdef0123456789abcdef"
    );
    let jwt = s.jwt.as_ref().unwrap();
    assert_eq!(jwt.algorithm, JwtAlgorithm::ES256);
    assert_eq!(jwt.header.as_str(), "x-wechat-jwt");
    match &jwt.key {
        wxgate::config::JwtKey::Pem { path, .. } => {
            assert_eq!(path, &dir.path().join("certs/jwt.pem"))
        }
        other => panic!("expected a PEM key, got {other:?}"),
    }
    let names: Vec<&str> = s.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["shop", "api", "static"]);
    assert_eq!(s.routes[0].auth, AuthMode::Required);
    assert_eq!(s.routes[0].non_wechat, NonWechat::Deny);
    assert_eq!(
        s.routes[1].auth,
        AuthMode::Required,
        "fail closed: auth defaults to required"
    );
    assert!(s.routes[1].api);
    assert_eq!(s.routes[2].auth, AuthMode::Off);
    assert_eq!(s.routes[2].upstream.base_path, "/assets");
    assert!(s.needs_auth());
    // The secrets never show in Debug output.
    let debug = format!("{s:?}");
    assert!(
        !debug.contains("app-secret-from-env") && !debug.contains(SESSION_SECRET),
        "{debug}"
    );
    Gateway::new(s).unwrap_or_else(|e| panic!("gateway from the shipped config: {e}"));

    // Settings::load reads the same file with the process environment, which lacks the vars.
    let errors = Settings::load(&path).unwrap_err();
    if std::env::var_os("WECHAT_APPSECRET").is_none()
        && std::env::var_os("WXGATE_SESSION_SECRET").is_none()
    {
        // Both unset variables are reported, each once, in file order.
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["wechat.secret", "session.secret"], "{errors}");
        for e in &errors {
            assert!(e.reason.contains("is not set"), "{e}");
        }
    }
}

#[test]
fn shipped_gateway_toml_without_its_key_file_names_the_key() {
    let (dir, path, text) = shipped_config(false);
    let e = only(Settings::from_toml(&text, &path, dir.path(), &env).unwrap_err());
    assert_eq!(e.key, "jwt.private_key");
    assert!(
        e.reason.contains("cannot read") && e.reason.contains("jwt.pem"),
        "{e}"
    );
    assert_eq!(e.file, path);
}

const MIN: &str = "[server]\nlisten = \"127.0.0.1:0\"\n\n[[route]]\nname = \"a\"\nupstream = \"http://127.0.0.1:3000\"\n";

fn load(text: &str) -> Result<Settings, ConfigError> {
    Settings::from_toml(
        text,
        Path::new("/etc/wxgate/gw.toml"),
        Path::new("/etc/wxgate"),
        &env,
    )
    .map_err(only)
}

/// The one error of a file that has exactly one.
fn only(errors: ConfigErrors) -> ConfigError {
    assert_eq!(errors.len(), 1, "exactly one error expected:\n{errors}");
    errors[0].clone()
}

/// Every error path: (config text, key, a phrase of the reason).
fn error_cases() -> Vec<(&'static str, String, &'static str, &'static str)> {
    vec![
        (
            "unknown key",
            MIN.replace("listen =", "lisen = \"x\"\nlisten ="),
            "server.lisen",
            "unknown field `lisen`",
        ),
        ("unknown top-level key", format!("colour = \"red\"\n{MIN}"), "colour", "unknown field `colour`"),
        (
            "unknown route key",
            format!("{MIN}colour = \"red\"\n"),
            "route[0].colour",
            "unknown field `colour`",
        ),
        (
            "bad duration",
            MIN.replace("[server]", "[server]\nrequest_timeout = \"soon\""),
            "server.request_timeout",
            "invalid duration",
        ),
        (
            "zero duration",
            MIN.replace("[server]", "[server]\nshutdown_timeout = \"0s\""),
            "server.shutdown_timeout",
            "greater than zero",
        ),
        (
            "bad CIDR",
            MIN.replace("[server]", "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]"),
            "server.trusted_proxies[1]",
            "is not a CIDR",
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
            "duplicate route name",
            format!("{MIN}\n[[route]]\nname = \"a\"\npath = \"/x\"\nupstream = \"http://127.0.0.1:3001\"\n"),
            "route[1].name",
            "duplicate route name",
        ),
        ("bad listen", MIN.replace("127.0.0.1:0", "localhost:80"), "server.listen", "invalid address"),
        (
            "bad upstream scheme",
            MIN.replace("http://127.0.0.1:3000", "ftp://127.0.0.1:3000"),
            "route[0].upstream",
            "scheme \"ftp\" is not supported",
        ),
        (
            "header limit out of range",
            MIN.replace("[server]", "[server]\nmax_request_header_bytes = 10"),
            "server.max_request_header_bytes",
            "out of range",
        ),
        (
            "reserved path",
            MIN.replace("name = \"a\"", "name = \"a\"\npath = \"/_wxgate/login\""),
            "route[0].path",
            "reserved",
        ),
        (
            "auth without wechat",
            MIN.replace("name = \"a\"", "name = \"a\"\nauth = \"required\""),
            "route[0].auth",
            "needs a [wechat] section",
        ),
    ]
}

#[test]
fn every_error_names_file_key_and_reason() {
    assert!(load(MIN).is_ok(), "the base config is valid");
    for (what, text, key, reason) in error_cases() {
        let e = match load(&text) {
            Ok(_) => panic!("{what}: accepted\n{text}"),
            Err(e) => e,
        };
        assert_eq!(e.key, key, "{what}: {e}");
        assert!(e.reason.contains(reason), "{what}: {e}");
        let shown = if key.is_empty() {
            e.reason.clone()
        } else {
            format!("{key}: {}", e.reason)
        };
        assert_eq!(e.to_string(), format!("/etc/wxgate/gw.toml: {shown}"));
        assert_eq!(e.file, Path::new("/etc/wxgate/gw.toml"));
        assert!(!e.to_string().contains('\n'), "{what}: one line: {e:?}");
    }
}

#[test]
fn syntax_errors_carry_the_position() {
    let e = load("[server\nlisten = 1\n").unwrap_err();
    assert_eq!(e.key, "");
    assert!(e.reason.contains("line 1, column 8"), "{e}");
    // toml's own lines stay: the offending line and a caret under the position.
    assert!(e.reason.contains("1 | [server\n"), "{e}");
    assert!(e.reason.contains("^"), "{e}");
    assert!(e.to_string().starts_with("/etc/wxgate/gw.toml: "));
}
