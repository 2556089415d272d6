//! The per-session cache that keeps signing off the request path: a session cookie that was
//! opened once maps to its identity headers and a JWT reused until shortly before it expires.
//! Keys are whole AEAD-sealed cookie values, which no client can forge. Bounded by entries and
//! by bytes (`session.cache_max_entries`, `session.cache_max_bytes`).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use super::session::SessionData;
use super::IdentityHeaders;

const SHARDS: usize = 16;
/// What a map slot, the two `Arc` headers and the allocator's rounding cost beyond the
/// strings themselves (measured order of magnitude, deliberately generous).
const OVERHEAD: usize = 256;

pub struct Cached {
    pub data: SessionData,
    pub headers: Arc<IdentityHeaders>,
    /// After this (unix seconds) the JWT is re-signed.
    pub jwt_refresh_at: u64,
}

impl Cached {
    pub fn usable_at(&self, now: u64) -> bool {
        self.data.is_valid_at(now) && now < self.jwt_refresh_at
    }

    /// Approximate heap bytes of this entry: its strings and header values (the JWT and the
    /// key dominate, about 1.4 kB in all) plus a fixed overhead.
    fn weight(&self, key: &str) -> usize {
        let d = &self.data;
        let h = &self.headers;
        key.len()
            + d.openid.len()
            + d.unionid.as_ref().map_or(0, String::len)
            + d.appid.len()
            + d.scope.len()
            + h.openid.len()
            + h.unionid.as_ref().map_or(0, |u| u.len())
            + h.jwt.len()
            + std::mem::size_of::<Cached>()
            + std::mem::size_of::<IdentityHeaders>()
            + OVERHEAD
    }
}

struct Shard {
    map: HashMap<Box<str>, (Arc<Cached>, usize)>,
    bytes: usize,
}

pub struct SessionCache {
    shards: Vec<RwLock<Shard>>,
    /// Per-shard bounds: the configured totals divided by [`SHARDS`] (at least 1 entry).
    max_entries: usize,
    max_bytes: usize,
}

impl Default for SessionCache {
    /// The `[session]` defaults: 10,000 entries, 32 MiB.
    fn default() -> Self {
        SessionCache::new(10_000, 32 << 20)
    }
}

impl SessionCache {
    /// A cache holding at most `max_entries` sessions and about `max_bytes` bytes in all.
    pub fn new(max_entries: usize, max_bytes: usize) -> SessionCache {
        SessionCache {
            shards: (0..SHARDS)
                .map(|_| {
                    RwLock::new(Shard {
                        map: HashMap::new(),
                        bytes: 0,
                    })
                })
                .collect(),
            max_entries: max_entries.div_ceil(SHARDS).max(1),
            max_bytes: max_bytes.div_ceil(SHARDS),
        }
    }

    fn shard(&self, key: &str) -> &RwLock<Shard> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// The hot path: one hash, one read lock, one lookup, one `Arc` clone.
    pub fn get(&self, key: &str) -> Option<Arc<Cached>> {
        let shard = self.shard(key).read().unwrap_or_else(|e| e.into_inner());
        shard.map.get(key).map(|(c, _)| c.clone())
    }

    /// Inserts, first making room: entries no longer usable at `now` go, then arbitrary ones
    /// (the hash map's order) until the shard is a quarter below its bounds, so the eviction
    /// cost is paid once per many inserts. An evicted session costs one re-open and re-sign.
    pub fn insert(&self, key: &str, value: Arc<Cached>, now: u64) {
        let weight = value.weight(key);
        if weight > self.max_bytes {
            return; // Could never fit: not cached (a cookie is capped at 4 kB, so not seen).
        }
        let mut shard = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
        if let Some((_, old)) = shard.map.remove(key) {
            shard.bytes -= old;
        }
        if shard.map.len() + 1 > self.max_entries || shard.bytes + weight > self.max_bytes {
            let Shard { map, bytes } = &mut *shard;
            map.retain(|_, (c, w)| {
                let keep = c.usable_at(now);
                if !keep {
                    *bytes -= *w;
                }
                keep
            });
            let entries_goal = self.max_entries - self.max_entries / 4 - 1;
            let bytes_goal = (self.max_bytes - self.max_bytes / 4).saturating_sub(weight);
            if map.len() > entries_goal || *bytes > bytes_goal {
                let doomed: Vec<Box<str>> = map
                    .iter()
                    .scan((map.len(), *bytes), |(n, b), (k, (_, w))| {
                        (*n > entries_goal || *b > bytes_goal).then(|| {
                            *n -= 1;
                            *b -= *w;
                            k.clone()
                        })
                    })
                    .collect();
                for k in doomed {
                    if let Some((_, w)) = map.remove(&k) {
                        *bytes -= w;
                    }
                }
            }
        }
        shard.bytes += weight;
        shard.map.insert(key.into(), (value, weight));
    }

    pub fn remove(&self, key: &str) {
        let mut shard = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
        if let Some((_, w)) = shard.map.remove(key) {
            shard.bytes -= w;
        }
    }

    /// Sessions held, over all shards.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).map.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate bytes held, over all shards.
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    const NOW: u64 = 1_700_000_000;

    fn entry(jwt_len: usize, expires_at: u64) -> Arc<Cached> {
        Arc::new(Cached {
            data: SessionData {
                openid: "o".repeat(28),
                unionid: None,
                appid: "wx0123456789abcdef".into(),
                scope: "snsapi_base".into(),
                issued_at: NOW - 10,
                expires_at,
            },
            headers: Arc::new(IdentityHeaders {
                openid: HeaderValue::from_static("oooooooooooooooooooooooooooo"),
                unionid: None,
                jwt: HeaderValue::from_str(&"j".repeat(jwt_len)).unwrap(),
                jwt_header: HeaderName::from_static("x-wechat-jwt"),
            }),
            jwt_refresh_at: expires_at,
        })
    }

    fn key(i: usize) -> String {
        format!("{i:0>300}")
    }

    #[test]
    fn count_bound_holds() {
        let cache = SessionCache::new(160, 1 << 30);
        for i in 0..5_000 {
            cache.insert(&key(i), entry(800, NOW + 3600), NOW);
            assert!(cache.len() <= 160, "{} entries after {i}", cache.len());
        }
        assert!(
            cache.len() >= 160 / 2,
            "eviction keeps most: {}",
            cache.len()
        );
        // The newest is always there.
        assert!(cache.get(&key(4_999)).is_some());
    }

    #[test]
    fn byte_bound_holds_and_is_accounted() {
        let e = entry(800, NOW + 3600);
        let w = e.weight(&key(0));
        assert!(
            (1_300..2_000).contains(&w),
            "a realistic entry weighs ~1.4 kB: {w}"
        );
        let max_bytes = 64 * 1024;
        let cache = SessionCache::new(1_000_000, max_bytes);
        for i in 0..2_000 {
            cache.insert(&key(i), entry(800, NOW + 3600), NOW);
            assert!(
                cache.bytes() <= max_bytes,
                "{} bytes after {i}",
                cache.bytes()
            );
        }
        let n = cache.len();
        assert!(n > 0 && n <= max_bytes / w, "{n}");
        assert_eq!(cache.bytes(), n * w, "bytes follow the entries");
        // Replacing and removing keep the count right.
        let k = key(1_999);
        cache.insert(&k, entry(800, NOW + 3600), NOW);
        assert_eq!(cache.bytes(), cache.len() * w);
        cache.remove(&k);
        assert!(cache.get(&k).is_none());
        assert_eq!(cache.bytes(), cache.len() * w);
    }

    #[test]
    fn expired_entries_go_first() {
        let cache = SessionCache::new(SHARDS * 4, 1 << 30);
        let stale: Vec<String> = (0..SHARDS * 3).map(|i| format!("stale{i}")).collect();
        for k in &stale {
            cache.insert(k, entry(100, NOW + 5), NOW);
        }
        // Later, when those are no longer usable, fresh ones push them out, not each other.
        let fresh: Vec<String> = (0..SHARDS * 2).map(|i| format!("fresh{i}")).collect();
        for k in &fresh {
            cache.insert(k, entry(100, NOW + 3600), NOW + 10);
        }
        let live = fresh.iter().filter(|k| cache.get(k).is_some()).count();
        assert!(live > fresh.len() * 3 / 4, "{live} of {}", fresh.len());
    }

    #[test]
    fn oversized_entry_is_not_cached() {
        let cache = SessionCache::new(100, SHARDS * 1_000);
        cache.insert("k", entry(2_000, NOW + 3600), NOW);
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
    }
}
