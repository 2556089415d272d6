//! The OAuth `state` value (generation, validation, constant-time comparison),
//! the login-state record kept in a sealed cookie during authorisation, and
//! the loop guard that stops endless login redirects.

use rand::distributions::Alphanumeric;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

/// Length of a generated state: 32 alphanumeric chars is ~190 bits.
pub const STATE_LEN: usize = 32;
/// WeChat refuses a `state` longer than 128 bytes ("state parameter is too long").
pub const MAX_STATE_LEN: usize = 128;
/// Failures within [`LOOP_WINDOW_SECS`] that trip the loop guard.
pub const LOOP_MAX_FAILURES: u8 = 3;
/// Length of the loop guard's window, in seconds (10 minutes).
pub const LOOP_WINDOW_SECS: u64 = 600;

/// A fresh unguessable `state`: 32 chars of `a-zA-Z0-9`. WeChat accepts only
/// alphanumerics there, and `thread_rng` is a CSPRNG seeded from the OS, so
/// the value cannot be predicted by an attacker staging a login CSRF.
pub fn new_state() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(STATE_LEN)
        .map(char::from)
        .collect()
}

/// True for 1..=128 bytes, all ASCII alphanumeric: what WeChat accepts, and
/// all a callback may carry before we compare it.
pub fn is_valid_state(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_STATE_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Compares two states in constant time (for equal lengths), so the
/// callback's answer time leaks nothing about how much of a guess was right.
/// Different lengths are simply unequal.
pub fn states_match(a: &str, b: &str) -> bool {
    // subtle returns 0 for slices of different length.
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// What the gateway remembers between sending the browser to WeChat and the
/// callback: the expected `state`, where to go afterwards, which attempt this
/// is, and when it started (unix seconds). Sealed in a cookie by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    pub state: String,
    pub return_to: String,
    pub round: u8,
    pub created_at: u64,
}

/// Counts failed logins per browser so a misconfiguration (or a browser
/// that drops cookies) ends on an error page instead of bouncing between the
/// gateway and WeChat forever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopGuard {
    pub failures: u8,
    pub window_start: u64,
}

impl LoopGuard {
    /// Whether the current window no longer applies at `now`. A window too
    /// far in the *future* (clock stepped back) also counts as stale, so a
    /// browser can't get stuck behind a tripped guard; a few seconds of skew
    /// between instances is tolerated.
    fn window_stale(&self, now: u64) -> bool {
        now.abs_diff(self.window_start) >= LOOP_WINDOW_SECS
    }

    /// Records one failed login at `now`, starting a new window if the
    /// current one is stale or empty.
    pub fn record_failure(&mut self, now: u64) {
        if self.failures == 0 || self.window_stale(now) {
            self.failures = 1;
            self.window_start = now;
        } else {
            self.failures = self.failures.saturating_add(1);
        }
    }

    /// True when [`LOOP_MAX_FAILURES`] failures fell within the window that
    /// is still current at `now`.
    pub fn tripped(&self, now: u64) -> bool {
        self.failures >= LOOP_MAX_FAILURES && !self.window_stale(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn new_state_shape_and_uniqueness() {
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let s = new_state();
            assert_eq!(s.len(), STATE_LEN);
            assert!(is_valid_state(&s), "{s}");
            assert!(seen.insert(s), "duplicate state");
        }
        // All three character classes show up across 200 * 32 chars.
        let all: String = seen.into_iter().collect();
        assert!(all.bytes().any(|b| b.is_ascii_lowercase()));
        assert!(all.bytes().any(|b| b.is_ascii_uppercase()));
        assert!(all.bytes().any(|b| b.is_ascii_digit()));
    }

    #[test]
    fn state_validation() {
        assert!(is_valid_state("a"));
        assert!(is_valid_state("STATE123"));
        assert!(is_valid_state(&"x".repeat(128)));
        assert!(!is_valid_state(""));
        assert!(!is_valid_state(&"x".repeat(129)));
        for bad in ["a b", "a-b", "a_b", "a=b", "a%20", "é", "a\n", "a/b", "漢"] {
            assert!(!is_valid_state(bad), "{bad:?}");
        }
    }

    #[test]
    fn constant_time_match() {
        assert!(states_match("abc123", "abc123"));
        assert!(!states_match("abc123", "abc124"));
        assert!(!states_match("abc123", "abc12"));
        assert!(!states_match("abc", ""));
        assert!(states_match("", ""));
    }

    #[test]
    fn login_state_serde_round_trip() {
        let ls = LoginState {
            state: new_state(),
            return_to: "/a?b=c".into(),
            round: 2,
            created_at: 1_700_000_000,
        };
        let json = serde_json::to_string(&ls).unwrap();
        let back: LoginState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ls);
    }

    #[test]
    fn loop_guard_trips_after_three_in_window() {
        let t = 1_700_000_000;
        let mut g = LoopGuard::default();
        assert!(!g.tripped(t));
        g.record_failure(t);
        assert_eq!(g.window_start, t);
        g.record_failure(t + 10);
        assert!(!g.tripped(t + 10));
        g.record_failure(t + 20);
        assert_eq!(g.failures, 3);
        assert!(g.tripped(t + 20));
        assert!(g.tripped(t + LOOP_WINDOW_SECS - 1));
        // The window ages out: no longer tripped, and the next failure restarts it.
        assert!(!g.tripped(t + LOOP_WINDOW_SECS));
        g.record_failure(t + LOOP_WINDOW_SECS + 5);
        assert_eq!(g.failures, 1);
        assert_eq!(g.window_start, t + LOOP_WINDOW_SECS + 5);
        assert!(!g.tripped(t + LOOP_WINDOW_SECS + 5));
    }

    #[test]
    fn loop_guard_spread_out_failures_do_not_trip() {
        let t = 1_700_000_000;
        let mut g = LoopGuard::default();
        g.record_failure(t);
        g.record_failure(t + 300);
        g.record_failure(t + 700); // first window stale: restarts here
        assert_eq!(g.failures, 1);
        assert!(!g.tripped(t + 700));
    }

    #[test]
    fn loop_guard_clock_skew_and_saturation() {
        let t = 1_700_000_000;
        let mut g = LoopGuard {
            failures: 3,
            window_start: t,
        };
        // Slight skew (another instance a few seconds behind): still tripped.
        assert!(g.tripped(t - 5));
        // Clock stepped far back: not stuck.
        assert!(!g.tripped(t - LOOP_WINDOW_SECS));
        g.failures = u8::MAX;
        g.record_failure(t + 1);
        assert_eq!(g.failures, u8::MAX);
        assert!(g.tripped(t + 1));
    }
}
