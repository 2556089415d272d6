//! Target `config_toml`: the configuration loader (`Settings::from_toml`, src/config.rs).
//! Property: no panic on any text; every error (all are reported at once) names the file
//! (`ConfigError::file` is the path given, and the message starts with it) and is one line
//! (it goes to a log as one message), except a TOML syntax error, which keeps its caret;
//! a success records the file in `Settings::source`.

use std::path::Path;

use wxgate::config::Settings;

/// Where the fuzzed text claims to come from. Relative paths in it resolve under a
/// directory that does not exist, so nothing the fuzzer writes reads a real file there.
pub const FILE: &str = "/fuzz/gateway.toml";
const BASE: &str = "/nonexistent/wxgate-fuzz";

/// `${NAME}` lookups: a few names are set, everything else is unset (an error).
fn env(name: &str) -> Option<String> {
    match name {
        "WECHAT_APPSECRET" => Some("0123456789abcdef0123456789abcdef".into()),
        "SESSION_SECRET" => Some("a-session-secret-of-at-least-32-bytes!!".into()),
        "EMPTY" => Some(String::new()),
        "PORT" => Some("8080".into()),
        _ => None,
    }
}

pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let file = Path::new(FILE);
    match Settings::from_toml(&text, file, Path::new(BASE), &env) {
        Ok(s) => assert_eq!(s.source, file),
        Err(errors) => {
            assert!(!errors.is_empty(), "an error list is never empty");
            for e in &errors {
                assert_eq!(e.file, file, "{e}");
                let msg = e.to_string();
                assert!(
                    msg.starts_with(&format!("{FILE}: ")),
                    "error does not name the file: {msg:?}"
                );
                // A TOML syntax error keeps toml's line, column and caret (several lines);
                // every other error is one line.
                let syntax = msg.contains("TOML parse error at line");
                assert!(
                    syntax || !msg.contains('\n'),
                    "error is not one line: {msg:?}"
                );
            }
        }
    }
}
