#![no_main]
// Property (ua::classify, ua::is_wechat): no panic; classify follows the documented order;
// is_wechat is true only when the UA contains MicroMessenger (WeCom only with allow_wecom).
// Checked in fuzz/props/user_agent.rs, shared with tests/fuzz_corpus.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wxgate_fuzz::props::user_agent::check(data));
