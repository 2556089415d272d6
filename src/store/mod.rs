//! State that outlives one request and, later, one process: session revocations, the memory
//! of redeemed login codes, WeChat's global tokens and single-use tickets. Each is a trait
//! with an in-memory implementation ([`memory`]) used by default; a shared one (Redis) comes
//! later behind the same traits. A leaf: it knows nothing about HTTP, auth or config.

pub mod memory;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The futures of the store traits: boxed, so the traits stay object-safe (`Arc<dyn …>`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A store that could not answer. Never carries a stored value (tokens are secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store unavailable: {0}")]
pub struct StoreError(pub String);

/// A session id: 16 random bytes, carried in the sealed cookie and as the JWT's `sid` claim.
/// `Copy` and fixed-size, so the per-request revocation check allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sid(pub [u8; 16]);

impl Sid {
    /// A fresh id from the system's CSPRNG.
    pub fn random() -> Sid {
        let mut b = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
        Sid(b)
    }

    /// The URL-safe text form used in JWT claims and logs (22 characters).
    pub fn encode(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0)
    }

    pub fn decode(s: &str) -> Option<Sid> {
        use base64::Engine as _;
        let v = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()?;
        Some(Sid(v.try_into().ok()?))
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sid({})", self.encode())
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

/// Which sessions were ended before their time (logout, an operator's revocation).
pub trait SessionStore: Send + Sync {
    /// Whether `sid` was revoked. Called on every authenticated request, so it never waits on
    /// the network and never allocates: a shared store mirrors its revocations into memory.
    fn is_revoked(&self, sid: &Sid) -> bool;
    /// Revokes `sid` until `until` (unix seconds: the session's own end, after which the
    /// cookie is refused anyway and the entry can go).
    fn revoke(&self, sid: Sid, until: u64) -> StoreFuture<'_, ()>;
}

/// Login codes already redeemed: a browser that repeats a callback (a double tap, a reload,
/// a prefetch) gets the identity the first one produced instead of WeChat's 40163.
/// Keys are digests of state and code; values are opaque to the store.
pub trait CodeMemo: Send + Sync {
    fn remember(&self, key: [u8; 32], value: Vec<u8>, ttl: Duration) -> StoreFuture<'_, ()>;
    fn recall(&self, key: [u8; 32]) -> StoreFuture<'_, Option<Vec<u8>>>;
}

/// A WeChat token (the global access token, later the JS-SDK ticket) with its lifetime.
#[derive(Clone)]
pub struct CachedToken {
    pub token: Arc<str>,
    /// Unix seconds after which it must be fetched again (before WeChat's own expiry).
    pub refresh_after: u64,
}

impl fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedToken")
            .field("token", &"<redacted>")
            .field("refresh_after", &self.refresh_after)
            .finish()
    }
}

/// WeChat's tokens per appid (`access_token:<appid>`, later `jsapi_ticket:<appid>`), shared
/// by everyone who needs them. Fetching is single-flight in the caller; a shared store adds a
/// lock across replicas.
pub trait TokenCache: Send + Sync {
    fn get(&self, key: &str) -> StoreFuture<'_, Option<CachedToken>>;
    fn put(&self, key: &str, token: CachedToken) -> StoreFuture<'_, ()>;
    /// Forgets a token WeChat refused (40001, 42001), so the next caller fetches a new one.
    fn invalidate(&self, key: &str) -> StoreFuture<'_, ()>;
}

/// Single-use tickets with a lifetime: the desktop scan login and the login-host handoff.
pub trait TicketStore: Send + Sync {
    /// Stores `value` under `id` for `ttl`, replacing any earlier value.
    fn put(&self, id: &str, value: Vec<u8>, ttl: Duration) -> StoreFuture<'_, ()>;
    /// Reads without consuming (a page polling for a scan's result).
    fn peek(&self, id: &str) -> StoreFuture<'_, Option<Vec<u8>>>;
    /// Reads and removes: of two concurrent takers, exactly one gets the value.
    fn take(&self, id: &str) -> StoreFuture<'_, Option<Vec<u8>>>;
}

/// The stores a gateway uses, chosen once at start-up and kept across reloads.
#[derive(Clone)]
pub struct Stores {
    pub sessions: Arc<dyn SessionStore>,
    pub codes: Arc<dyn CodeMemo>,
    pub tokens: Arc<dyn TokenCache>,
    pub tickets: Arc<dyn TicketStore>,
}

impl Stores {
    /// Everything in this process's memory: the default, nothing to install.
    pub fn memory() -> Stores {
        Stores {
            sessions: Arc::new(memory::MemorySessions::default()),
            codes: Arc::new(memory::MemoryCodes::default()),
            tokens: Arc::new(memory::MemoryTokens::default()),
            tickets: Arc::new(memory::MemoryTickets::default()),
        }
    }
}

impl Default for Stores {
    fn default() -> Self {
        Stores::memory()
    }
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_round_trips_and_is_random() {
        let a = Sid::random();
        let b = Sid::random();
        assert_ne!(a, b);
        assert_eq!(a.encode().len(), 22);
        assert_eq!(Sid::decode(&a.encode()), Some(a));
        assert_eq!(Sid::decode("short"), None);
        assert_eq!(Sid::decode("!!!!!!!!!!!!!!!!!!!!!!"), None);
    }

    #[test]
    fn cached_token_debug_hides_the_token() {
        let t = CachedToken {
            token: "SECRET_TOKEN".into(),
            refresh_after: 1,
        };
        assert!(!format!("{t:?}").contains("SECRET_TOKEN"));
    }
}
