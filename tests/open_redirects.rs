//! Runs oauth2-proxy's open-redirect vectors through `safe_return_to`: every
//! result must keep the browser on the gateway's origin, and of the table
//! vectors only "/redirect" (the one same-origin path) is honoured as given.

mod common;

use common::redirect_vectors::{payloads, query_unescape, table_vectors, PAYLOAD_LINES, TABLE_LEN};
use wxgate::auth::redirect::{encode_for_location, safe_return_to};

const ORIGIN: &str = "https://gw.example/some/page?x=1";

/// Panics unless `result` is "/" or a single-slash relative path that a
/// browser resolves (raw, Location-encoded, or decoded once more) to the
/// gateway's own origin.
fn assert_same_origin(input: &str, result: &str) {
    let b = result.as_bytes();
    assert!(
        result == "/" || (b.len() >= 2 && b[0] == b'/' && b[1] != b'/' && b[1] != b'\\'),
        "input {input:?} gave {result:?}"
    );
    let base = url::Url::parse(ORIGIN).unwrap();
    let decoded = percent_encoding::percent_decode_str(result)
        .decode_utf8_lossy()
        .into_owned();
    for candidate in [result.to_string(), encode_for_location(result), decoded] {
        let joined = base
            .join(&candidate)
            .unwrap_or_else(|e| panic!("input {input:?}: {candidate:?} does not resolve: {e}"));
        assert_eq!(joined.scheme(), "https", "input {input:?} -> {candidate:?}");
        assert_eq!(
            joined.host_str(),
            Some("gw.example"),
            "input {input:?} -> {candidate:?} leaves the origin"
        );
        assert_eq!(joined.port(), None, "input {input:?} -> {candidate:?}");
        assert_eq!(joined.username(), "", "input {input:?} -> {candidate:?}");
    }
    assert!(encode_for_location(result).is_ascii());
}

#[test]
fn table_vectors_only_same_origin_path_is_kept() {
    let vectors = table_vectors();
    assert_eq!(vectors.len(), TABLE_LEN);
    let mut kept = Vec::new();
    for (name, value) in &vectors {
        let result = safe_return_to(value);
        assert_same_origin(value, &result);
        if result == *value {
            kept.push(name.clone());
        } else {
            assert_eq!(result, "/", "{name}: {value:?}");
        }
    }
    assert_eq!(kept, ["Single Slash"], "only /redirect may be honoured");
    assert_eq!(safe_return_to("/redirect"), "/redirect");
}

#[test]
fn payload_list_never_leaves_origin() {
    let lines = payloads();
    assert_eq!(lines.len(), PAYLOAD_LINES);
    let mut checked = 0;
    let mut unescape_failures = 0;
    let mut honoured = Vec::new();
    for line in &lines {
        // As oauth2-proxy does: unescape once, then validate. Lines with a
        // malformed escape are tested raw; every line is also tested raw.
        let unescaped = query_unescape(line);
        if unescaped.is_none() {
            unescape_failures += 1;
        }
        for input in [unescaped.as_deref().unwrap_or(line), line.as_str()] {
            let result = safe_return_to(input);
            assert_same_origin(input, &result);
            if result != "/" {
                honoured.push(input.to_string());
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * PAYLOAD_LINES);
    // Regression guard: the honoured inputs are same-origin paths such as
    // "/https://google.com/.." (a path on the gateway, as checked above);
    // pin how many there are so any change to the rule shows up here.
    assert_eq!(unescape_failures, EXPECTED_UNESCAPE_FAILURES);
    assert_eq!(honoured.len(), EXPECTED_HONOURED, "{honoured:#?}");
}

/// Every line of the list has well-formed escapes.
const EXPECTED_UNESCAPE_FAILURES: usize = 0;
/// Inputs (raw and unescaped, so duplicates count twice) kept as given.
const EXPECTED_HONOURED: usize = 102;

#[test]
fn query_unescape_matches_go() {
    assert_eq!(query_unescape("a+b%2Fc").as_deref(), Some("a b/c"));
    assert_eq!(query_unescape("%zz"), None);
    assert_eq!(query_unescape("%4"), None);
    assert_eq!(query_unescape("%E4%B8%AD").as_deref(), Some("中"));
}
