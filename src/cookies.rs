//! The request `Cookie` header, read as bytes pair by pair (RFC 6265 §5.4, RFC 6265bis
//! §5.7.4), and the removal of the gateway's own cookies before a request goes upstream.
//! A leaf module: other cookies are opaque bytes, never decoded, never rejected.
//!
//! Properties the callers (and the fuzz target) rely on:
//! - Nothing here panics or allocates while reading ([`pairs`], [`get`], [`get_str`]).
//! - A header value that is not UTF-8 (a foreign cookie with `é` in it) only hides the pairs
//!   that are not UTF-8 from [`get_str`]; every other pair stays readable.
//! - Several `Cookie` headers (HTTP/2 sends one per cookie, RFC 9113 §8.2.3) read as one.
//! - [`strip`] keeps every pair it does not remove byte for byte, in order, and leaves the
//!   headers untouched (no allocation) when there is nothing to remove and at most one
//!   `Cookie` header.

use http::header::{self, HeaderMap, HeaderValue};

/// Optional white space around pairs, names and values (RFC 6265 §5.2: space and tab).
fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ows(*first) {
            break;
        }
        s = rest;
    }
    trim_end(s)
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., last] = s {
        if !is_ows(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// Splits one pair (already trimmed) into name and value. A pair without `=` is a nameless
/// cookie (RFC 6265bis): empty name, the whole pair as value, so it can never match a name.
fn split_pair(pair: &[u8]) -> (&[u8], &[u8]) {
    match pair.iter().position(|&b| b == b'=') {
        Some(i) => (trim(&pair[..i]), trim(&pair[i + 1..])),
        None => (&[], pair),
    }
}

/// The non-empty pairs of one header value, trimmed, as they are written.
fn raw_pairs(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b';')
        .map(trim)
        .filter(|p| !p.is_empty())
}

/// Every cookie of the request as `(name, value)` bytes, across all `Cookie` headers, in
/// order. Values are not unquoted or decoded. Empty pairs (`a=1;;b=2`) are skipped.
pub fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers
        .get_all(header::COOKIE)
        .into_iter()
        .flat_map(|v| raw_pairs(v.as_bytes()))
        .map(split_pair)
}

/// The value of the first cookie named exactly `name` (case-sensitive, as browsers compare
/// cookie names), as bytes.
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    let name = name.as_bytes();
    pairs(headers).find_map(|(n, v)| (n == name).then_some(v))
}

/// [`get`] for values the gateway wrote itself (ASCII): `None` when the value is not UTF-8.
/// Other cookies that are not UTF-8 do not matter.
pub fn get_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    get(headers, name).and_then(|v| std::str::from_utf8(v).ok())
}

/// Whether a cookie name is one of `own`: an entry matches exactly, or, when it ends in `*`,
/// as a prefix (`wxgate_state_*` covers one cookie per pending login). Cookie names the
/// gateway is configured with never contain `*`, so the two cannot be confused.
pub fn is_own<S: AsRef<str>>(name: &[u8], own: &[S]) -> bool {
    own.iter().any(|o| {
        let o = o.as_ref().as_bytes();
        match o.strip_suffix(b"*") {
            Some(prefix) => name.starts_with(prefix),
            None => name == o,
        }
    })
}

/// Removes the cookies named by `own` (see [`is_own`]) from the request. The other pairs are
/// kept byte for byte, in order, with the spacing the browser used between them (empty
/// pairs and white space at either end go); when something is removed, or when there are
/// several `Cookie` headers, they are joined with `"; "` into one header (what RFC 9113 §8.2.3 asks
/// of a hop from HTTP/2 to HTTP/1.1), and the header goes when nothing is left.
pub fn strip<S: AsRef<str>>(headers: &mut HeaderMap, own: &[S]) {
    let mut count = 0;
    let mut hit = false;
    for v in headers.get_all(header::COOKIE) {
        count += 1;
        hit = hit || raw_pairs(v.as_bytes()).any(|p| is_own(split_pair(p).0, own));
    }
    if !hit && count <= 1 {
        // The hot path: nothing of ours, one header or none; leave it as it is.
        return;
    }
    let mut kept: Vec<u8> = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        let mut first_of_header = true;
        // Raw segments between `;`, their spacing included: a removal leaves the rest of
        // the header exactly as the browser wrote it.
        for seg in v.as_bytes().split(|&b| b == b';') {
            let pair = trim(seg);
            if pair.is_empty() || is_own(split_pair(pair).0, own) {
                continue;
            }
            if kept.is_empty() {
                kept.extend_from_slice(pair);
            } else if first_of_header {
                kept.extend_from_slice(b"; ");
                kept.extend_from_slice(pair);
            } else {
                kept.push(b';');
                kept.extend_from_slice(trim_end(seg));
            }
            first_of_header = false;
        }
    }
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        // The bytes come from valid header values minus separators, so this cannot fail;
        // if it ever did, dropping the header is the safe side (ours are gone either way).
        if let Ok(v) = HeaderValue::from_bytes(&kept) {
            headers.insert(header::COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::COOKIE, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn non_utf8_neighbour_does_not_hide_ours() {
        let h = map(&[b"x=\xc3\xa9; wxgate_session=SEALED; y=\xff\xfe"]);
        assert!(
            h[header::COOKIE].to_str().is_err(),
            "the header is not ASCII"
        );
        assert_eq!(get_str(&h, "wxgate_session"), Some("SEALED"));
        assert_eq!(get(&h, "x"), Some(&b"\xc3\xa9"[..]));
        assert_eq!(get(&h, "y"), Some(&b"\xff\xfe"[..]));
        assert_eq!(get_str(&h, "y"), None);
    }

    #[test]
    fn pairs_across_headers_and_whitespace() {
        let h = map(&[b" a = 1 ;\tb=2;;", b"c=3=4; noeq ; =v; d="]);
        let got: Vec<(&[u8], &[u8])> = pairs(&h).collect();
        let want: Vec<(&[u8], &[u8])> = vec![
            (b"a", b"1"),
            (b"b", b"2"),
            (b"c", b"3=4"),
            (b"", b"noeq"),
            (b"", b"v"),
            (b"d", b""),
        ];
        assert_eq!(got, want);
        assert_eq!(get_str(&h, "c"), Some("3=4"));
        assert_eq!(get_str(&h, "d"), Some(""));
        assert_eq!(get(&h, "noeq"), None, "a nameless cookie has no name");
        assert_eq!(get(&h, ""), Some(&b"noeq"[..]));
        assert_eq!(get(&h, "A"), None, "names are case-sensitive");
        assert_eq!(get(&HeaderMap::new(), "a"), None);
        // The first of two same-named cookies wins.
        assert_eq!(get_str(&map(&[b"s=1; s=2"]), "s"), Some("1"));
    }

    #[test]
    fn strip_keeps_others_byte_exact() {
        let mut h = map(&[
            b"x=\xc3\xa9; wxgate_session=SECRET;  q=\"a b\"",
            b"__Host-wxgate_state_abc=1; z=\xff",
        ]);
        strip(&mut h, &["wxgate_session", "__Host-wxgate_state_*"]);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(
            h[header::COOKIE].as_bytes(),
            b"x=\xc3\xa9;  q=\"a b\"; z=\xff"
        );
        let mut h = map(&[b" a=1;b=2 ; wxgate_session=s;c=3;\t;d", b"e=5 "]);
        strip(&mut h, &["wxgate_session"]);
        assert_eq!(h[header::COOKIE], "a=1;b=2;c=3;d; e=5");
    }

    #[test]
    fn strip_removes_empty_header_and_prefixes() {
        let mut h = map(&[b"wxgate_state_A1=x; wxgate_state_B2=y", b"wxgate_session=s"]);
        strip(&mut h, &["wxgate_session", "wxgate_state_*"]);
        assert!(!h.contains_key(header::COOKIE));
        // A prefix entry does not match a shorter name, and exact entries are exact.
        let mut h = map(&[b"wxgate_state=1; wxgate_sessionx=2"]);
        strip(&mut h, &["wxgate_session", "wxgate_state_*"]);
        assert_eq!(h[header::COOKIE], "wxgate_state=1; wxgate_sessionx=2");
    }

    #[test]
    fn strip_without_ours_leaves_one_header_alone() {
        let mut h = map(&[b"a=1;b=2 ;; c"]);
        strip(&mut h, &["wxgate_session"]);
        assert_eq!(
            h[header::COOKIE],
            "a=1;b=2 ;; c",
            "untouched, not rewritten"
        );
        // Several headers are joined for the HTTP/1.1 upstream.
        let mut h = map(&[b"a=1", b"b=2"]);
        strip(&mut h, &["wxgate_session"]);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2");
        let mut h = HeaderMap::new();
        strip(&mut h, &["wxgate_session"]);
        assert!(h.is_empty());
    }

    #[test]
    fn is_own_rules() {
        let own = ["wxgate_session", "wxgate_state_*"];
        assert!(is_own(b"wxgate_session", &own));
        assert!(is_own(b"wxgate_state_x", &own));
        assert!(is_own(b"wxgate_state_", &own));
        assert!(!is_own(b"wxgate_state", &own));
        assert!(!is_own(b"Wxgate_session", &own));
        assert!(!is_own(b"", &own));
    }
}
