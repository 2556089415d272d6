//! Target `state_cookie`: the login-state cookie (`LoginState` sealed as `wxgate_state`,
//! src/auth/state.rs) and the loop guard (`LoopGuard` as `wxgate_guard`). Property: see
//! [`super::cookies::check`] (no forgery, round trip, no tampering, no panic), for both.

use wxgate::auth::state::{LoginState, LoopGuard};

use super::Reader;

pub fn make(r: &mut Reader) -> LoginState {
    LoginState {
        state: r.string(),
        return_to: r.string(),
        round: r.u8(),
        created_at: r.u64(),
    }
}

pub fn check(data: &[u8]) {
    super::cookies::check(data, "wxgate_state", make);
    super::cookies::check(data, "wxgate_guard", |r| LoopGuard {
        failures: r.u8(),
        window_start: r.u64(),
    });
}
