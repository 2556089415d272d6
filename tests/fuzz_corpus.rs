//! Replays each fuzz target's committed seed corpus (`fuzz/corpus/<target>/`) and crash
//! reproducers (`fuzz/artifacts/<target>/`) through the target's property (`fuzz/props/`),
//! so plain `cargo test` on stable checks them without cargo-fuzz; and keeps the list of
//! targets, fuzz/Cargo.toml and those directories in step.

#[path = "../fuzz/props/mod.rs"]
mod props;

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Files directly in `dir` (none when it does not exist), sorted, hidden files skipped.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("read_dir entry").path())
        .filter(|p| p.is_file())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    out.sort();
    out
}

/// Runs `check` on every seed and reproducer of `target`; panics naming each input whose
/// property failed. Returns how many seeds there are.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let seeds = files(&fuzz_dir().join("corpus").join(target));
    let crashes = files(&fuzz_dir().join("artifacts").join(target));
    let mut failed = Vec::new();
    for path in seeds.iter().chain(&crashes) {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: the property fails on {failed:#?} (the panic messages are above)"
    );
    seeds.len()
}

macro_rules! corpus_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let seeds = replay(stringify!($name), props::$name::check);
                assert!(seeds >= 5, "{}: only {seeds} seed(s) in fuzz/corpus", stringify!($name));
            }
        )*
        /// The targets with a test above.
        const TESTED: &[&str] = &[$(stringify!($name)),*];
    };
}

corpus_tests!(
    session_cookie,
    state_cookie,
    return_to,
    config_toml,
    user_agent
);

/// A new target must be added everywhere: props TARGETS, a test above, fuzz/Cargo.toml,
/// fuzz_targets/<name>.rs and a seed corpus.
#[test]
fn targets_are_registered_everywhere() {
    let registered: BTreeSet<&str> = props::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        registered.len(),
        props::TARGETS.len(),
        "duplicate target name"
    );
    let tested: BTreeSet<&str> = TESTED.iter().copied().collect();
    assert_eq!(registered, tested, "props::TARGETS vs corpus_tests! here");
    let sources: BTreeSet<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let registered_owned: BTreeSet<String> = registered.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        sources, registered_owned,
        "fuzz/fuzz_targets/*.rs vs props::TARGETS"
    );
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("\n[workspace]"),
        "the fuzz crate must stay out of the root build"
    );
    for name in &registered {
        assert!(
            manifest.contains(&format!(
                "name = \"{name}\"\npath = \"fuzz_targets/{name}.rs\""
            )),
            "fuzz/Cargo.toml has no [[bin]] for {name}"
        );
        let target_src =
            std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{name}.rs"))).unwrap();
        assert!(
            target_src.contains("// Property"),
            "{name}: the target states no property"
        );
        assert!(
            target_src.contains(&format!("props::{name}::check")),
            "{name}: not its own property"
        );
    }
}

/// The properties must be able to fail: each oracle rejects answers a broken implementation
/// could give.
#[test]
fn oracles_reject_bad_answers() {
    use props::return_to::assert_same_origin;
    for bad in [
        "//evil.com",
        "/\\evil.com",
        "https://evil.com",
        "javascript:alert(1)",
        "/%2F/evil.com",
        "/%5Cevil.com",
        "/a\tb",
        "/a b",
        "evil.com",
    ] {
        let caught = catch_unwind(|| assert_same_origin(bad, bad));
        assert!(caught.is_err(), "the return_to oracle accepted {bad:?}");
    }
    for good in ["/", "/a?b=//c", "/中文", "/https://evil.com"] {
        assert_same_origin(good, good);
    }

    use props::user_agent::expected;
    use wxgate::auth::ua::ClientKind;
    assert_eq!(expected("Mozilla/5.0 miniProgram"), ClientKind::Other);
    assert_eq!(expected("wxwork/2 MICROMESSENGER/6"), ClientKind::WeCom);
    assert_eq!(
        expected("MicroMessenger/8 miniprogram"),
        ClientKind::MiniProgram
    );

    // A value sealed under a key the gateway has fails the forgery clause.
    let c = props::cookies::codecs();
    let genuine = c.gateway.seal("wxgate_session", &1u8);
    let caught = catch_unwind(|| props::session_cookie::check(genuine.as_bytes()));
    assert!(
        caught.is_err(),
        "the cookie property accepted a value that opens"
    );
    // One sealed under the stranger key (as the seeds are) passes.
    props::session_cookie::check(c.stranger.seal("wxgate_session", &1u8).as_bytes());
}
