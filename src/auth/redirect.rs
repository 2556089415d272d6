//! Where the browser may be sent after login or logout: `return_to` is
//! honoured only as a relative path on the gateway's own origin (no open
//! redirects), plus removal of query parameters such as `code` and `state`.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// Longest `return_to` honoured; longer values fall back to "/".
pub const MAX_RETURN_TO_LEN: usize = 2048;

/// The fallback target for anything refused.
const FALLBACK: &str = "/";

/// Characters a browser strips or treats as a separator when it resolves a
/// URL: C0 controls, DEL, space (browsers drop tab/CR/LF *inside* URLs, so
/// `/\t/evil.com` becomes `//evil.com`) and C1 controls.
fn is_forbidden_char(c: char) -> bool {
    c.is_control() || c == ' ' || c == '\\'
}

/// Returns `raw` unchanged if it is a relative same-origin path, else "/".
///
/// `raw` is the value after the query parser's one URL-decoding. Honoured:
/// "/" or "/" followed by a char that is neither "/" nor "\\", no backslash,
/// no control characters or spaces, at most 2048 bytes; and, after one more
/// percent-decoding, still no leading "//" or "/\\", no backslash and no
/// control characters (a later hop, or a sloppy upstream, may decode again).
/// Everything else (absolute URLs, `//host`, `/\host`, `javascript:`, ...)
/// yields "/". Non-ASCII characters are allowed (paths in Chinese are
/// normal here); use [`encode_for_location`] before writing a header.
pub fn safe_return_to(raw: &str) -> String {
    if is_safe(raw) {
        raw.to_string()
    } else {
        FALLBACK.to_string()
    }
}

fn is_safe(raw: &str) -> bool {
    if raw.len() > MAX_RETURN_TO_LEN {
        return false;
    }
    let b = raw.as_bytes();
    // Must start with exactly one '/': "//host" and "/\host" are
    // protocol-relative to browsers, and anything not starting with '/' is
    // either absolute ("https:", "javascript:") or relative to the current
    // path (which we don't know here).
    match b {
        [b'/'] => return true,
        [b'/', second, ..] if *second != b'/' && *second != b'\\' => {}
        _ => return false,
    }
    if raw.chars().any(is_forbidden_char) {
        return false;
    }
    // Second look after one more decoding: "/%2F%2Fevil.com" or "/%5Cevil"
    // must not turn into a host if something downstream decodes again.
    let decoded = percent_decode_str(raw).decode_utf8_lossy();
    let d = decoded.as_bytes();
    if d.starts_with(b"//") || d.starts_with(b"/\\") {
        return false;
    }
    !decoded.chars().any(|c| c.is_control() || c == '\\')
}

/// Bytes percent-encoded by [`encode_for_location`]: controls and space (never
/// present in a sanitised path, but cheap insurance) and everything non-ASCII,
/// via `utf8_percent_encode`. `%` itself is left alone so existing escapes
/// survive unchanged.
const LOCATION_ENCODE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'<').add(b'>').add(b'`');

/// Makes a sanitised path safe to put in a `Location` header: non-ASCII
/// characters (header values must be visible ASCII) and a few unsafe ASCII
/// characters are percent-encoded; everything else, including existing `%XX`
/// escapes, is kept.
pub fn encode_for_location(path: &str) -> String {
    utf8_percent_encode(path, LOCATION_ENCODE).to_string()
}

/// Removes the query parameters named in `names` from a path-and-query
/// (keeping every other parameter byte for byte, and any fragment). Names
/// are compared after form-decoding, so `%63ode=` is dropped like `code=`.
/// The `?` goes too when no parameter is left.
pub fn strip_params(path_and_query: &str, names: &[&str]) -> String {
    let (before_frag, fragment) = match path_and_query.split_once('#') {
        Some((a, f)) => (a, Some(f)),
        None => (path_and_query, None),
    };
    let Some((path, query)) = before_frag.split_once('?') else {
        return path_and_query.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let raw_name = pair.split_once('=').map_or(*pair, |(n, _)| n);
            let name = form_decode(raw_name);
            !names.iter().any(|n| *n == name)
        })
        .collect();
    let mut out = String::with_capacity(path_and_query.len());
    out.push_str(path);
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// application/x-www-form-urlencoded decoding of one name ('+' is a space).
fn form_decode(s: &str) -> String {
    let plus_fixed = s.replace('+', " ");
    percent_decode_str(&plus_fixed)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honours_plain_paths() {
        for ok in [
            "/",
            "/a",
            "/redirect",
            "/a/b?c=d&e=f#frag",
            "/search?q=%E4%B8%AD%E6%96%87",
            "/中文/页面",
            "/a?next=//evil.com",
            "/a%20b",
            "/.well-known/x",
        ] {
            assert_eq!(safe_return_to(ok), ok, "{ok:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_RETURN_TO_LEN - 1));
        assert_eq!(safe_return_to(&long), long);
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "a",
            "redirect",
            "//evil.com",
            "///evil.com",
            "/\\evil.com",
            "\\/evil.com",
            "/a\\b",
            "https://evil.com",
            "http:/evil.com",
            "javascript:alert(1)",
            " /a",
            "/\t/evil.com",
            "/a\nb",
            "/a\rb",
            "/a b",
            "/a\u{0}",
            "/a\u{7f}",
            "/a\u{85}",
            "/%2F/evil.com",
            "/%2fevil.com",
            "/%5Cevil.com",
            "/%5cevil.com",
            "/a%5Cb",
            "/a%0Ab",
            "/a%09b",
            "/a%00",
            "?x=/a",
            "#/a",
        ] {
            assert_eq!(safe_return_to(bad), "/", "{bad:?}");
        }
        let too_long = format!("/{}", "a".repeat(MAX_RETURN_TO_LEN));
        assert_eq!(safe_return_to(&too_long), "/");
    }

    #[test]
    fn location_encoding() {
        assert_eq!(encode_for_location("/中"), "/%E4%B8%AD");
        assert_eq!(encode_for_location("/a?b=%2F&c=d#e"), "/a?b=%2F&c=d#e");
        assert_eq!(encode_for_location("/a\"<>`"), "/a%22%3C%3E%60");
        assert!(encode_for_location("/中文/页面?q=é").is_ascii());
    }

    #[test]
    fn strip_params_cases() {
        let n = &["code", "state"];
        assert_eq!(strip_params("/p?code=1&state=2", n), "/p");
        assert_eq!(strip_params("/p?a=1&code=1&b=2&state=x", n), "/p?a=1&b=2");
        assert_eq!(strip_params("/p?code&state=", n), "/p");
        assert_eq!(strip_params("/p?%63ode=1&st%61te=2&x=%20", n), "/p?x=%20");
        assert_eq!(strip_params("/p?codex=1&xcode=2", n), "/p?codex=1&xcode=2");
        assert_eq!(strip_params("/p?a=1&code=9#h?code=1", n), "/p?a=1#h?code=1");
        assert_eq!(strip_params("/p", n), "/p");
        assert_eq!(strip_params("/p#x", n), "/p#x");
        assert_eq!(strip_params("/p?", n), "/p");
        assert_eq!(strip_params("/p?a=1&&b=2", n), "/p?a=1&b=2");
        assert_eq!(strip_params("/p?a=1", &[]), "/p?a=1");
        assert_eq!(strip_params("/p?a+b=1&a%20b=2&c=3", &["a b"]), "/p?c=3");
    }
}
