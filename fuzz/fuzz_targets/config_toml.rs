#![no_main]
// Property (Settings::from_toml): no panic on any text; every error names the file and is
// one line.
// Checked in fuzz/props/config_toml.rs, shared with tests/fuzz_corpus.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wxgate_fuzz::props::config_toml::check(data));
