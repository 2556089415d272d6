//! Target `return_to`: where the browser may be sent after login or logout
//! (src/auth/redirect.rs). Property, for the input taken as is and as a form-decoded query
//! value (how `/_wxgate/login?return_to=` and `/_wxgate/logout` read it):
//!
//! - no panic;
//! - `safe_return_to` answers the input unchanged or the fallback "/";
//! - whatever it answers, and what the callback sends (`strip_params(.., ["code", "state"])`),
//!   is same-origin by [`assert_same_origin`];
//! - `encode_for_location` of it is a valid `Location` header value (else `pages::redirect`
//!   would send a 302 without one).

use percent_encoding::percent_decode_str;
use wxgate::auth::redirect::{
    encode_for_location, safe_return_to, strip_params, MAX_RETURN_TO_LEN,
};

/// The origin the paths are resolved against.
pub const ORIGIN: &str = "https://gw.example/some/page?x=1";

pub fn check(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    check_one(&raw);
    let mut query = b"return_to=".to_vec();
    query.extend_from_slice(data);
    if let Some((_, v)) = form_urlencoded::parse(&query).find(|(k, _)| k == "return_to") {
        check_one(&v);
    }
}

fn check_one(input: &str) {
    let result = safe_return_to(input);
    assert!(
        result == input || result == "/",
        "{input:?} was rewritten to {result:?}"
    );
    assert_same_origin(input, &result);
    let after_callback = strip_params(&result, &["code", "state"]);
    assert_same_origin(input, &after_callback);
    for path in [&result, &after_callback] {
        let location = encode_for_location(path);
        assert!(
            http::HeaderValue::from_str(&location).is_ok(),
            "{input:?}: Location {location:?} is not a valid header value"
        );
    }
}

/// Panics unless `path` keeps the browser on the gateway's origin: "/" or a path that starts
/// with exactly one "/" (not "//", not "/\"), at most `MAX_RETURN_TO_LEN` bytes, without
/// control characters, spaces or backslashes, and still without a leading "//" or "/\",
/// backslashes or control characters after one more percent-decoding; and that a browser
/// resolving it (as is, as written into `Location`, or decoded once more) against
/// [`ORIGIN`] stays on https://gw.example with no userinfo or port. No scheme can appear:
/// the first character is "/".
pub fn assert_same_origin(input: &str, path: &str) {
    if path == "/" {
        return;
    }
    let b = path.as_bytes();
    assert!(
        b.len() >= 2 && b[0] == b'/' && b[1] != b'/' && b[1] != b'\\',
        "input {input:?}: {path:?} does not start with a single '/'"
    );
    assert!(path.len() <= MAX_RETURN_TO_LEN, "input {input:?}: too long");
    assert!(
        !path
            .chars()
            .any(|c| c.is_control() || c == ' ' || c == '\\'),
        "input {input:?}: {path:?} has a control character, space or backslash"
    );
    let decoded = percent_decode_str(path).decode_utf8_lossy().into_owned();
    assert!(
        !decoded.starts_with("//") && !decoded.starts_with("/\\"),
        "input {input:?}: {path:?} decodes to {decoded:?}"
    );
    assert!(
        !decoded.chars().any(|c| c.is_control() || c == '\\'),
        "input {input:?}: {path:?} decodes to {decoded:?}"
    );
    let base = url::Url::parse(ORIGIN).expect("origin");
    for candidate in [path.to_string(), encode_for_location(path), decoded] {
        let joined = base
            .join(&candidate)
            .unwrap_or_else(|e| panic!("input {input:?}: {candidate:?} does not resolve: {e}"));
        assert!(
            joined.scheme() == "https"
                && joined.host_str() == Some("gw.example")
                && joined.port().is_none()
                && joined.username().is_empty()
                && joined.password().is_none(),
            "input {input:?}: {candidate:?} resolves to {joined}, off the origin"
        );
    }
}
