//! Request-path normalisation and segment-wise prefix matching: the one view of a path that
//! routing, the gateway's own endpoints and the upstream all share. A leaf module (pure
//! functions, nothing from the crate) so that a fuzz target can drive it directly.
//!
//! Why: routing on the raw path lets `/%61dmin`, `//admin`, `/x/../admin` or
//! `/public/..;/admin` reach a route other than the one the upstream finally serves (nginx
//! and Tomcat decode, merge slashes and resolve dot-segments; Tomcat drops `;parameters`).
//! The gateway therefore normalises once, routes on the result and forwards exactly that.

use std::borrow::Cow;

/// Why a path cannot be normalised safely; every one is answered with 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not an absolute path (`*`, authority-form, empty).
    NotAbsolute,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%2F`: a slash that is not a separator here may become one upstream.
    EncodedSlash,
    /// `\`, raw or `%5C`: some servers treat it as a separator.
    Backslash,
    /// A control character (`%00`–`%1F`, `%7F`), raw or encoded.
    ControlChar,
    /// `%25` followed by two hex digits: decoded twice it is another character (`%252e`).
    DoubleEncoding,
    /// A segment `.;x` or `..;x` anywhere, or `;x` before another segment: Tomcat drops the
    /// parameter and resolves what is left, so the segment means one thing to the router and
    /// another upstream.
    SegmentParameter,
}

impl Refusal {
    /// The short text the client gets.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NotAbsolute => "The request path must start with '/'.",
            Refusal::BadEscape => "The request path has an invalid percent-encoding.",
            Refusal::EncodedSlash => "The request path has an encoded '/'.",
            Refusal::Backslash => "The request path has a backslash.",
            Refusal::ControlChar => "The request path has a control character.",
            Refusal::DoubleEncoding => "The request path is percent-encoded twice.",
            Refusal::SegmentParameter => {
                "The request path has a parameter on an empty or dot segment."
            }
        }
    }
}

/// Normalises a request path (RFC 3986 §6.2.2 plus the rules above), or refuses it.
///
/// - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded; every other
///   escape is kept as sent (hex case included);
/// - dot-segments are resolved as RFC 3986 §5.2.4 does (`/a/b/..` is `/a/`, `/..` is `/`);
/// - repeated slashes are merged (`//a///b` is `/a/b`); a trailing slash is kept;
/// - case and `;parameters` are kept (matching ignores both, see [`strip_prefix`]).
///
/// Refused: see [`Refusal`]. The output:
/// - starts with `/`; never contains `//`, a `.` or `..` segment (with or without
///   `;parameters`), `%2F`, `\` or `%5C`, a control character raw or encoded, `%25` followed
///   by two hex digits, or an escape of an unreserved character;
/// - is a fixed point: `normalize(normalize(p)) == normalize(p)`, returned borrowed.
///
/// Already-normal paths (nearly all of them) are returned borrowed, without allocating.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, Refusal> {
    if !path.starts_with('/') {
        return Err(Refusal::NotAbsolute);
    }
    if check(path)? {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    // Segment rules again, now that `%2e` is a dot.
    check(&decoded)?;
    let out = resolve(&decoded);
    debug_assert_eq!(check(&out), Ok(true), "{path:?} normalised to {out:?}");
    Ok(Cow::Owned(out))
}

/// Whether `path` lies under the route prefix `prefix`, and the rest of it after the prefix.
///
/// Compares whole segments, ASCII-case-insensitively (many upstreams are case-insensitive,
/// so `/ADMIN` must get `/admin`'s policy), and ignores `;parameters` in the path's segments
/// (Tomcat and Spring do: `/admin;jsessionid=x/page` is `/admin/page` to them). `/api`
/// covers `/api`, `/api/x`, `/api;p` but not `/apiary`; `/api/` covers `/api/` and below.
/// `path` should be normalised first. The rest starts with `/` or `;`, or is empty, unless
/// `prefix` ends with `/`.
pub fn strip_prefix<'a>(prefix: &str, path: &'a str) -> Option<&'a str> {
    let (p, s) = (prefix.as_bytes(), path.as_bytes());
    let (mut i, mut j) = (0, 0);
    loop {
        if i == p.len() {
            let boundary = p.last() == Some(&b'/') || matches!(s.get(j), None | Some(b'/' | b';'));
            return boundary.then(|| &path[j..]);
        }
        match s.get(j) {
            None => return None,
            // Parameters end a segment: skip them, and the prefix must be at a segment end too.
            Some(b';') if p[i] != b';' => {
                while j < s.len() && s[j] != b'/' {
                    j += 1;
                }
                if p[i] != b'/' {
                    return None;
                }
            }
            Some(c) if c.eq_ignore_ascii_case(&p[i]) => {
                i += 1;
                j += 1;
            }
            Some(_) => return None,
        }
    }
}

/// Whether `path` lies under `prefix` (see [`strip_prefix`]).
pub fn is_under(prefix: &str, path: &str) -> bool {
    strip_prefix(prefix, path).is_some()
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte `%XY` at `s[i..]` stands for, if `s[i]` is `%` followed by two hex digits.
fn escape_at(s: &[u8], i: usize) -> Option<u8> {
    Some((hex(*s.get(i + 1)?)? << 4) | hex(*s.get(i + 2)?)?)
}

/// Validates a (possibly not normal) path: `Err` for anything refused anywhere in it,
/// `Ok(true)` when it is already normal, `Ok(false)` when [`decode_unreserved`] and
/// [`resolve`] would change it. Scans the whole path: a refusal after a needed change
/// still counts.
fn check(path: &str) -> Result<bool, Refusal> {
    let s = path.as_bytes();
    let mut normal = true;
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let v = escape_at(s, i).ok_or(Refusal::BadEscape)?;
                match v {
                    b'/' => return Err(Refusal::EncodedSlash),
                    b'\\' => return Err(Refusal::Backslash),
                    0..=0x1f | 0x7f => return Err(Refusal::ControlChar),
                    b'%' if escape_at(s, i + 2).is_some() => return Err(Refusal::DoubleEncoding),
                    v if is_unreserved(v) => normal = false,
                    _ => {}
                }
                i += 3;
            }
            b'\\' => return Err(Refusal::Backslash),
            0..=0x1f | 0x7f => return Err(Refusal::ControlChar),
            _ => i += 1,
        }
    }
    // Segments: the path starts with '/', so the first split item is the empty text before it.
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        let (name, params) = match seg.split_once(';') {
            Some((name, _)) => (name, true),
            None => (seg, false),
        };
        match (name, params) {
            (".", true) | ("..", true) => return Err(Refusal::SegmentParameter),
            ("", true) if !last => return Err(Refusal::SegmentParameter),
            (".", false) | ("..", false) => normal = false,
            ("", false) if !last => normal = false,
            _ => {}
        }
    }
    Ok(normal)
}

/// Decodes the escapes of unreserved characters; refuses what [`check`] refuses in escapes.
fn decode_unreserved(path: &str) -> Result<String, Refusal> {
    let s = path.as_bytes();
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let v = escape_at(s, i).ok_or(Refusal::BadEscape)?;
            if is_unreserved(v) {
                out.push(v);
            } else {
                out.extend_from_slice(&s[i..i + 3]);
            }
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    // ASCII escapes became ASCII bytes, everything else was copied: still UTF-8.
    String::from_utf8(out).map_err(|_| Refusal::BadEscape)
}

/// Resolves dot-segments (RFC 3986 §5.2.4) and merges empty segments; keeps a trailing slash.
fn resolve(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut trailing = false;
    for seg in path.split('/').skip(1) {
        match seg {
            "" | "." => trailing = true,
            ".." => {
                let cut = out.rfind('/').unwrap_or(0);
                out.truncate(cut);
                trailing = true;
            }
            _ => {
                out.push('/');
                out.push_str(seg);
                trailing = false;
            }
        }
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, Refusal> {
        normalize(p).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/",
            "/a",
            "/a/",
            "/Admin/x.html",
            "/a;jsessionid=1/b",
            "/app/;jsessionid=1",
            "/%E4%BD%A0%e5%a5%bd",
            "/a%20b%3Bc%3f",
            "/...",
            "/.a/..b/a.",
            "/100%25",
            "/%25zz",
            "/é",
        ] {
            assert!(
                matches!(normalize(p), Ok(Cow::Borrowed(q)) if q == p),
                "{p:?}: {:?}",
                normalize(p)
            );
        }
    }

    #[test]
    fn the_review_cases() {
        assert_eq!(n("/%61dmin").unwrap(), "/admin");
        assert_eq!(n("//admin").unwrap(), "/admin");
        assert_eq!(n("/./admin").unwrap(), "/admin");
        assert_eq!(n("/x/../admin").unwrap(), "/admin");
        assert_eq!(n("/public/../admin").unwrap(), "/admin");
        assert_eq!(n("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(n("/public/.%2e/admin").unwrap(), "/admin");
        assert_eq!(n("/public/%2E./admin").unwrap(), "/admin");
        // Kept: matching handles case and parameters.
        assert_eq!(n("/ADMIN").unwrap(), "/ADMIN");
        assert_eq!(n("/admin;jsessionid=x").unwrap(), "/admin;jsessionid=x");
    }

    #[test]
    fn dot_segments_as_rfc_3986() {
        // RFC 3986 §5.2.4's examples, plus the edges.
        assert_eq!(n("/a/b/c/./../../g").unwrap(), "/a/g");
        assert_eq!(n("/mid/content=5/../6").unwrap(), "/mid/6");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(n("/..").unwrap(), "/");
        assert_eq!(n("/../../a").unwrap(), "/a");
        assert_eq!(n("/.").unwrap(), "/");
        assert_eq!(n("//").unwrap(), "/");
        assert_eq!(n("/a//b///c//").unwrap(), "/a/b/c/");
        assert_eq!(n("/a/%2e%2E/%2e/b").unwrap(), "/b");
        assert_eq!(n("/%7Euser/%41%5a").unwrap(), "/~user/AZ");
        // Reserved and non-ASCII escapes are kept as sent.
        assert_eq!(n("/%61/%3b/%e4%bd%a0").unwrap(), "/a/%3b/%e4%bd%a0");
    }

    #[test]
    fn refusals() {
        use Refusal::*;
        let cases = [
            ("*", NotAbsolute),
            ("", NotAbsolute),
            ("admin", NotAbsolute),
            ("/a%2Fb", EncodedSlash),
            ("/a%2fb", EncodedSlash),
            ("/a\\b", Backslash),
            ("/a%5Cb", Backslash),
            ("/a%5cb", Backslash),
            ("/a%00", ControlChar),
            ("/a%0d%0aX", ControlChar),
            ("/a%7F", ControlChar),
            ("/a%1f", ControlChar),
            ("/a\u{1}", ControlChar),
            ("/a\tb", ControlChar),
            ("/a%", BadEscape),
            ("/a%2", BadEscape),
            ("/a%zz", BadEscape),
            ("/a%%32%65", BadEscape),
            ("/public/%252e%252e/admin", DoubleEncoding),
            ("/%252f", DoubleEncoding),
            ("/%2541", DoubleEncoding),
            // Decoding makes a double encoding: %25 then %34 %31 -> "%2541".
            ("/%25%34%31", DoubleEncoding),
            ("/public/..;/admin", SegmentParameter),
            ("/public/..;x/admin", SegmentParameter),
            ("/public/.;/admin", SegmentParameter),
            ("/public/.;x", SegmentParameter),
            ("/public/..;", SegmentParameter),
            ("/public/%2e%2e;/admin", SegmentParameter),
            ("/public/.%2E;x/admin", SegmentParameter),
            ("/;x/admin", SegmentParameter),
            ("/public//;x/admin", SegmentParameter),
            // A refusal after a needed change still counts.
            ("//a/..;/b", SegmentParameter),
            ("/%61/%2f", EncodedSlash),
        ];
        for (p, want) in cases {
            assert_eq!(normalize(p), Err(want), "{p:?}");
        }
    }

    #[test]
    fn prefix_matching() {
        fn under<'a>(pre: &str, p: &'a str) -> Option<&'a str> {
            strip_prefix(pre, p)
        }
        assert_eq!(under("/admin", "/admin"), Some(""));
        assert_eq!(under("/admin", "/admin/x"), Some("/x"));
        assert_eq!(under("/admin", "/ADMIN/x"), Some("/x"));
        assert_eq!(
            under("/admin", "/aDmIn;jsessionid=1"),
            Some(";jsessionid=1")
        );
        assert_eq!(under("/admin", "/admin;a=b/c"), Some(";a=b/c"));
        assert_eq!(under("/admin", "/adminx"), None);
        assert_eq!(under("/admin", "/adm"), None);
        assert_eq!(under("/admin", "/adm;in"), None);
        assert_eq!(under("/admin/secret", "/admin;x/Secret/y"), Some("/y"));
        assert_eq!(under("/admin/", "/admin/"), Some(""));
        assert_eq!(under("/admin/", "/admin;x/y"), Some("y"));
        assert_eq!(under("/admin/", "/admin"), None);
        assert_eq!(under("/", "/anything"), Some("anything"));
        assert_eq!(under("/", "/;p"), Some(";p"));
        assert_eq!(under("/_wxgate", "/_WXGATE;x/healthz"), Some(";x/healthz"));
        assert!(!is_under("/_wxgate", "/_wxgatefoo"));
    }

    /// A small deterministic generator of hostile paths: every output must be refused or be
    /// a normal fixed point with none of the forbidden spellings.
    #[test]
    fn properties_over_generated_paths() {
        const TOKENS: [&str; 24] = [
            "/", "/", "//", ".", "..", "%2e", "%2E", "%2e%2e", ";", ";x", "a", "B", "%41", "%25",
            "%2f", "%5c", "\\", "%00", "%", "2e", "~", "%7e", "%3b", "é",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..50_000 {
            let len = 1 + (next() % 8) as usize;
            let mut p = String::from("/");
            for _ in 0..len {
                p.push_str(TOKENS[(next() % TOKENS.len() as u64) as usize]);
            }
            let Ok(out) = normalize(&p) else { continue };
            let again = normalize(&out);
            assert!(
                matches!(&again, Ok(Cow::Borrowed(q)) if *q == out),
                "{p:?} -> {out:?} -> {again:?}"
            );
            assert!(out.starts_with('/'), "{p:?} -> {out:?}");
            assert!(!out.contains("//"), "{p:?} -> {out:?}");
            assert!(!out.contains('\\'), "{p:?} -> {out:?}");
            assert!(
                !out.bytes().any(|b| b < 0x20 || b == 0x7f),
                "{p:?} -> {out:?}"
            );
            let lower = out.to_ascii_lowercase();
            for bad in ["%2f", "%5c", "%00", "%2e", "%41", "%7e"] {
                assert!(!lower.contains(bad), "{p:?} -> {out:?}");
            }
            let b = out.as_bytes();
            assert!(
                !(0..b.len()).any(|i| b[i..].starts_with(b"%25") && escape_at(b, i + 2).is_some()),
                "{p:?} -> {out:?}"
            );
            for seg in out.split('/') {
                let name = seg.split(';').next().unwrap();
                assert!(name != "." && name != "..", "{p:?} -> {out:?}");
            }
        }
    }
}
