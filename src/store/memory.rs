//! The in-memory stores: one process, nothing to install. Every map is bounded, and expired
//! entries are dropped as new ones arrive, so no client can grow them without limit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use super::{now, CachedToken, CodeMemo, SessionStore, Sid, StoreFuture, TicketStore, TokenCache};

/// Bound on each map. Revocations outlive their sessions by nothing, so 100k entries is a
/// hundred thousand logouts within one session lifetime.
const MAX_ENTRIES: usize = 100_000;

fn ready<'a, T: Send + 'a>(v: T) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(Ok(v)))
}

/// Drops expired entries; if the map is still full, drops the ones closest to expiry.
fn make_room<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    expired: impl Fn(&V) -> bool,
    expiry: impl Fn(&V) -> u128,
) {
    if map.len() < MAX_ENTRIES {
        return;
    }
    map.retain(|_, v| !expired(v));
    if map.len() >= MAX_ENTRIES {
        let mut by_expiry: Vec<(u128, K)> =
            map.iter().map(|(k, v)| (expiry(v), k.clone())).collect();
        by_expiry.sort_unstable_by_key(|(e, _)| *e);
        for (_, k) in by_expiry.into_iter().take(MAX_ENTRIES / 10) {
            map.remove(&k);
        }
    }
}

#[derive(Default)]
pub struct MemorySessions {
    revoked: RwLock<HashMap<Sid, u64>>,
    /// Entries in `revoked`, read without the lock: most gateways have revoked nothing.
    count: AtomicUsize,
}

impl SessionStore for MemorySessions {
    fn is_revoked(&self, sid: &Sid) -> bool {
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let map = self.revoked.read().unwrap_or_else(|e| e.into_inner());
        map.get(sid).is_some_and(|until| *until > now())
    }

    fn revoke(&self, sid: Sid, until: u64) -> StoreFuture<'_, ()> {
        let mut map = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        let t = now();
        make_room(&mut map, |u| *u <= t, |u| *u as u128);
        map.insert(sid, until);
        self.count.store(map.len(), Ordering::Release);
        ready(())
    }
}

/// A value and the moment it expires.
type Expiring = (Vec<u8>, Instant);

#[derive(Default)]
pub struct MemoryCodes(Mutex<HashMap<[u8; 32], Expiring>>);

impl CodeMemo for MemoryCodes {
    fn remember(&self, key: [u8; 32], value: Vec<u8>, ttl: Duration) -> StoreFuture<'_, ()> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let t = Instant::now();
        make_room(
            &mut map,
            |(_, u)| *u <= t,
            |(_, u)| u.duration_since(t).as_millis(),
        );
        map.insert(key, (value, t + ttl));
        ready(())
    }

    fn recall(&self, key: [u8; 32]) -> StoreFuture<'_, Option<Vec<u8>>> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let hit = map
            .get(&key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(v, _)| v.clone());
        ready(hit)
    }
}

#[derive(Default)]
pub struct MemoryTokens(Mutex<HashMap<String, CachedToken>>);

impl TokenCache for MemoryTokens {
    fn get(&self, key: &str) -> StoreFuture<'_, Option<CachedToken>> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        ready(map.get(key).filter(|t| t.refresh_after > now()).cloned())
    }

    fn put(&self, key: &str, token: CachedToken) -> StoreFuture<'_, ()> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(key.to_string(), token);
        ready(())
    }

    fn invalidate(&self, key: &str) -> StoreFuture<'_, ()> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(key);
        ready(())
    }
}

#[derive(Default)]
pub struct MemoryTickets(Mutex<HashMap<String, Expiring>>);

impl MemoryTickets {
    fn live(&self, id: &str, take: bool) -> Option<Vec<u8>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let alive = map.get(id).is_some_and(|(_, until)| *until > now);
        if !alive {
            map.remove(id);
            return None;
        }
        if take {
            map.remove(id).map(|(v, _)| v)
        } else {
            map.get(id).map(|(v, _)| v.clone())
        }
    }
}

impl TicketStore for MemoryTickets {
    fn put(&self, id: &str, value: Vec<u8>, ttl: Duration) -> StoreFuture<'_, ()> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let t = Instant::now();
        make_room(
            &mut map,
            |(_, u)| *u <= t,
            |(_, u)| u.duration_since(t).as_millis(),
        );
        map.insert(id.to_string(), (value, t + ttl));
        ready(())
    }

    fn peek(&self, id: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        ready(self.live(id, false))
    }

    fn take(&self, id: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        ready(self.live(id, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn revocation_is_seen_until_it_expires() {
        let s = MemorySessions::default();
        let (a, b) = (Sid::random(), Sid::random());
        assert!(!s.is_revoked(&a));
        s.revoke(a, now() + 60).await.unwrap();
        assert!(s.is_revoked(&a));
        assert!(!s.is_revoked(&b));
        s.revoke(b, now().saturating_sub(1)).await.unwrap();
        assert!(
            !s.is_revoked(&b),
            "a revocation past its session's end is moot"
        );
    }

    #[tokio::test]
    async fn codes_expire() {
        let c = MemoryCodes::default();
        c.remember([1; 32], b"id".to_vec(), Duration::from_secs(60))
            .await
            .unwrap();
        c.remember([2; 32], b"gone".to_vec(), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(
            c.recall([1; 32]).await.unwrap().as_deref(),
            Some(&b"id"[..])
        );
        assert_eq!(c.recall([2; 32]).await.unwrap(), None);
        assert_eq!(c.recall([3; 32]).await.unwrap(), None);
    }

    #[tokio::test]
    async fn tokens_respect_refresh_after_and_invalidate() {
        let t = MemoryTokens::default();
        let tok = |after| CachedToken {
            token: "T".into(),
            refresh_after: after,
        };
        t.put("access_token:wx1", tok(now() + 100)).await.unwrap();
        assert!(t.get("access_token:wx1").await.unwrap().is_some());
        assert!(t.get("access_token:wx2").await.unwrap().is_none());
        t.invalidate("access_token:wx1").await.unwrap();
        assert!(t.get("access_token:wx1").await.unwrap().is_none());
        t.put("access_token:wx1", tok(now() - 1)).await.unwrap();
        assert!(t.get("access_token:wx1").await.unwrap().is_none(), "stale");
    }

    #[tokio::test]
    async fn a_ticket_is_taken_once() {
        let t = Arc::new(MemoryTickets::default());
        t.put("abc", b"v".to_vec(), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(t.peek("abc").await.unwrap().as_deref(), Some(&b"v"[..]));
        let mut handles = Vec::new();
        for _ in 0..8 {
            let t = t.clone();
            handles.push(tokio::spawn(async move { t.take("abc").await.unwrap() }));
        }
        let mut got = 0;
        for h in handles {
            got += h.await.unwrap().is_some() as usize;
        }
        assert_eq!(got, 1, "exactly one taker wins");
        t.put("short", b"v".to_vec(), Duration::ZERO).await.unwrap();
        assert_eq!(t.take("short").await.unwrap(), None, "expired");
    }

    #[test]
    fn maps_are_bounded() {
        let mut map: HashMap<u32, u64> = (0..MAX_ENTRIES as u32)
            .map(|i| (i, 10 + i as u64))
            .collect();
        make_room(&mut map, |u| *u < 5, |u| *u as u128);
        assert!(map.len() < MAX_ENTRIES);
        assert!(!map.contains_key(&0), "closest to expiry went first");
        assert!(map.contains_key(&(MAX_ENTRIES as u32 - 1)));
    }
}
