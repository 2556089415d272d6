//! The per-session cache that keeps signing off the request path: a session cookie that was
//! opened once maps to its identity headers and a JWT reused until shortly before it expires.
//! Keys are whole AEAD-sealed cookie values, which no client can forge.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use super::session::SessionData;
use super::IdentityHeaders;

const SHARDS: usize = 16;
/// Bound on remembered sessions; a full shard is emptied (the cost is one re-open and sign).
const MAX_PER_SHARD: usize = 8192;

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
}

pub struct SessionCache {
    shards: Vec<RwLock<HashMap<Box<str>, Arc<Cached>>>>,
}

impl Default for SessionCache {
    fn default() -> Self {
        SessionCache {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
        }
    }
}

impl SessionCache {
    fn shard(&self, key: &str) -> &RwLock<HashMap<Box<str>, Arc<Cached>>> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    pub fn get(&self, key: &str) -> Option<Arc<Cached>> {
        let shard = self.shard(key).read().unwrap_or_else(|e| e.into_inner());
        shard.get(key).cloned()
    }

    pub fn insert(&self, key: &str, value: Arc<Cached>) {
        let mut shard = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
        if shard.len() >= MAX_PER_SHARD {
            shard.clear();
        }
        shard.insert(key.into(), value);
    }

    pub fn remove(&self, key: &str) {
        let mut shard = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
        shard.remove(key);
    }
}
