#![no_main]
// Property (SessionCodec::open, the session cookie): no panic; a value the fuzzer made
// never opens (authentic encryption); open(seal(x)) == x; a tampered sealed value never opens.
// Checked in fuzz/props/session_cookie.rs, shared with tests/fuzz_corpus.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wxgate_fuzz::props::session_cookie::check(data));
