//! The simulator's mutable protocol state: issued codes, user (sns) tokens, refresh tokens,
//! global (cgi-bin) tokens, daily quota counters and recorded consents. All times are
//! simulated milliseconds from [`super::clock::Clock`].

use std::collections::{HashMap, HashSet};

/// A code lives 5 minutes on the official-account flow (reference §2).
pub const CODE_TTL_MS: u64 = 5 * 60 * 1000;
/// …and 10 minutes on qrconnect (reference §6).
pub const QR_CODE_TTL_MS: u64 = 10 * 60 * 1000;
/// sns and global access tokens: 7200 s.
pub const TOKEN_TTL_MS: u64 = 7200 * 1000;
/// Refresh tokens: 30 days.
pub const REFRESH_TTL_MS: u64 = 30 * 24 * 3600 * 1000;
/// After `cgi-bin/token` issues a new token the previous one still works this long.
pub const OVERLAP_MS: u64 = 5 * 60 * 1000;

#[derive(Debug, Clone)]
pub struct CodeEntry {
    pub appid: String,
    pub user: String,
    pub scope: String,
    pub expires_ms: u64,
    pub used: bool,
}

#[derive(Debug, Clone)]
pub struct SnsToken {
    pub appid: String,
    pub user: String,
    pub scope: String,
    pub expires_ms: u64,
}

#[derive(Debug, Clone)]
pub struct RefreshEntry {
    pub appid: String,
    pub user: String,
    pub scope: String,
    pub expires_ms: u64,
}

#[derive(Debug, Clone)]
pub struct GlobalToken {
    pub appid: String,
    pub expires_ms: u64,
    /// Set when a newer token replaced this one: after this instant it is "not latest" (40001).
    pub stale_after_ms: Option<u64>,
}

/// Per-app token bookkeeping.
#[derive(Debug, Clone, Default)]
pub struct AppTokens {
    /// Latest token from `cgi-bin/token`.
    pub token: Option<String>,
    /// Latest token from `cgi-bin/stable_token` (isolated from `cgi-bin/token`).
    pub stable: Option<String>,
    /// Quota day the counters below belong to.
    pub day: u64,
    pub token_calls: u64,
    pub stable_calls: u64,
    pub force_refreshes: u64,
    pub last_force_ms: Option<u64>,
}

#[derive(Debug, Default)]
pub struct State {
    pub codes: HashMap<String, CodeEntry>,
    pub sns_tokens: HashMap<String, SnsToken>,
    pub refresh_tokens: HashMap<String, RefreshEntry>,
    pub global_tokens: HashMap<String, GlobalToken>,
    pub apps: HashMap<String, AppTokens>,
    /// (user, appid) pairs that pressed Allow on the snsapi_userinfo consent page.
    pub consents: HashSet<(String, String)>,
}

impl State {
    /// Drops entries long dead so a long-running simulator does not grow without bound.
    /// Used codes are kept until well after expiry so reuse still answers 40163.
    pub fn prune(&mut self, now_ms: u64) {
        let day = 24 * 3600 * 1000;
        self.codes.retain(|_, c| c.expires_ms + day > now_ms);
        self.sns_tokens.retain(|_, t| t.expires_ms + day > now_ms);
        self.refresh_tokens
            .retain(|_, t| t.expires_ms + day > now_ms);
        self.global_tokens
            .retain(|_, t| t.expires_ms + day > now_ms);
    }

    /// Counters for `appid`, reset when the simulated day changed.
    pub fn app_tokens(&mut self, appid: &str, day: u64) -> &mut AppTokens {
        let t = self.apps.entry(appid.to_string()).or_default();
        if t.day != day {
            t.day = day;
            t.token_calls = 0;
            t.stable_calls = 0;
            t.force_refreshes = 0;
        }
        t
    }
}
