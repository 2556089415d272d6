//! The properties the fuzz targets check, one module per target. Shared by the fuzz crate
//! (`fuzz/src/lib.rs`) and by `tests/fuzz_corpus.rs`, which replays the committed corpus and
//! crash reproducers under plain `cargo test`. A property holds when `check` returns; any
//! panic (an assertion here, or one inside wxgate) is a finding.
//!
//! Adding a target: `props/<name>.rs` with `pub fn check(data: &[u8])`, a line in [`TARGETS`],
//! `fuzz_targets/<name>.rs` (three lines), a `[[bin]]` in fuzz/Cargo.toml and seeds in
//! `corpus/<name>/`. `tests/fuzz_corpus.rs` checks that these stay in step.
#![allow(dead_code)]

pub mod config_toml;
pub mod cookies;
pub mod return_to;
pub mod session_cookie;
pub mod state_cookie;
pub mod user_agent;

/// A target's property: returns when it holds, panics when it does not.
pub type Check = fn(&[u8]);

/// Every fuzz target: its name (the fuzz_targets file, the corpus and artifacts directories)
/// and its property.
pub const TARGETS: &[(&str, Check)] = &[
    ("session_cookie", session_cookie::check),
    ("state_cookie", state_cookie::check),
    ("return_to", return_to::check),
    ("config_toml", config_toml::check),
    ("user_agent", user_agent::check),
];

/// Reads structured values off the fuzzer's bytes. Running out is not an error: every read
/// then yields zeros or empty strings, so every input maps to some value.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data }
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }

    /// A string of up to 255 bytes (length prefix, then bytes, invalid UTF-8 replaced).
    pub fn string(&mut self) -> String {
        let n = usize::from(self.u8()).min(self.data.len());
        let (s, rest) = self.data.split_at(n);
        self.data = rest;
        String::from_utf8_lossy(s).into_owned()
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}
