//! Loader for the open-redirect vectors in `tests/fixtures/open-redirects/`
//! (ported from oauth2-proxy, MIT): the 57-entry `IsValidRedirect` table
//! and the payload list, plus the query-unescaping oauth2-proxy applies.

use std::path::PathBuf;

/// Number of entries in oauth2-proxy's `IsValidRedirect` table.
pub const TABLE_LEN: usize = 57;
/// Number of lines in `oauth2_proxy_openredirects.txt` (one is empty).
pub const PAYLOAD_LINES: usize = 559;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/open-redirects")
        .join(name)
}

/// `(name, value)` for every table vector, in file order.
pub fn table_vectors() -> Vec<(String, String)> {
    let path = fixture("oauth2_proxy_redirect_vectors.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let doc: serde_json::Value = serde_json::from_str(&text).expect("vectors JSON");
    doc["vectors"]
        .as_array()
        .expect("a `vectors` array")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().expect("name").to_string(),
                v["value"].as_str().expect("value").to_string(),
            )
        })
        .collect()
}

/// Every line of the payload list, verbatim (not unescaped).
pub fn payloads() -> Vec<String> {
    let path = fixture("oauth2_proxy_openredirects.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines().map(str::to_string).collect()
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte; `None` on a
/// malformed escape (as Go returns an error). Invalid UTF-8 is replaced,
/// as a Rust query parser would.
pub fn query_unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}
