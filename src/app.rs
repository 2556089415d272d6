//! The running gateway in two parts: the live [`Snapshot`] (routes, policies, keys, WeChat
//! settings, certificates), which a reload replaces whole, and the runtime state that outlives
//! snapshots (upstream pools, stores, readiness). A request takes one snapshot when it starts
//! and keeps it to the end, so a reload never changes the rules under a request in flight.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio_rustls::TlsAcceptor;

use crate::auth::Auth;
use crate::config::{keep_restart_values, ConfigError, ConfigErrors, Settings};
use crate::proxy::Proxy;
use crate::routes::Router;
use crate::store::Stores;

/// Everything a reload may change, validated and built before it goes live.
pub struct Snapshot {
    pub settings: Settings,
    pub router: Router,
    pub auth: Option<Auth>,
    /// The certificate and key of `[server.tls]`, re-read on every reload.
    pub tls: Option<TlsAcceptor>,
    /// 1 for the configuration the process started with, +1 per successful reload.
    pub generation: u64,
}

impl Snapshot {
    /// Builds every part that can fail (keys, certificates) so a bad file never goes live.
    /// `previous`: the snapshot being replaced, whose JWT keys stay published until the tokens
    /// they signed have expired.
    fn build(
        settings: Settings,
        stores: &Stores,
        previous: Option<&Snapshot>,
        generation: u64,
    ) -> Result<Snapshot, ConfigError> {
        let auth = Auth::from_settings(&settings, stores, previous.and_then(|p| p.auth.as_ref()))?;
        let tls = match &settings.server.tls {
            Some(t) => Some(TlsAcceptor::from(
                crate::tls::server_config(&t.cert, &t.key).map_err(|reason| ConfigError {
                    file: settings.source.clone(),
                    key: "server.tls".into(),
                    reason,
                })?,
            )),
            None => None,
        };
        Ok(Snapshot {
            router: Router::new(&settings.routes),
            auth,
            tls,
            settings,
            generation,
        })
    }
}

/// What a reload did.
#[derive(Debug, Default)]
pub struct Reloaded {
    pub generation: u64,
    /// Keys that changed but need a restart: their old values stay in force.
    pub restart_required: Vec<&'static str>,
}

/// The gateway: the current snapshot and the state that survives reloads.
pub struct Gateway {
    live: ArcSwap<Snapshot>,
    proxy: Proxy,
    stores: Stores,
    ready: AtomicBool,
    generation: AtomicU64,
    /// Serialises reloads (a second SIGHUP while one is being applied waits for it).
    reloading: Mutex<()>,
}

impl Gateway {
    /// Builds the gateway with in-memory stores; key material that fails to load is a config
    /// error.
    pub fn new(settings: Settings) -> Result<Gateway, ConfigError> {
        Gateway::with_stores(settings, Stores::memory())
    }

    pub fn with_stores(settings: Settings, stores: Stores) -> Result<Gateway, ConfigError> {
        let proxy = Proxy::new(&settings.server);
        let first = Snapshot::build(settings, &stores, None, 1)?;
        Ok(Gateway {
            live: ArcSwap::from_pointee(first),
            proxy,
            stores,
            ready: AtomicBool::new(false),
            generation: AtomicU64::new(1),
            reloading: Mutex::new(()),
        })
    }

    /// The configuration in force now. A request calls this once and keeps the result.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.live.load_full()
    }

    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Validates `settings` exactly as at start-up, builds the new snapshot and swaps it in.
    /// On an error nothing changes. Keys that need a restart keep their running values.
    pub fn reload(&self, mut settings: Settings) -> Result<Reloaded, ConfigError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.live.load_full();
        let restart_required = keep_restart_values(&old.settings, &mut settings);
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let next = Snapshot::build(settings, &self.stores, Some(&old), generation)?;
        self.proxy.set_timeout(next.settings.server.request_timeout);
        self.live.store(Arc::new(next));
        self.generation.store(generation, Ordering::Relaxed);
        Ok(Reloaded {
            generation,
            restart_required,
        })
    }

    /// Re-reads `path` (and every file it names) and reloads; logs the outcome: one ERROR line
    /// per error, as `wxgate check` prints them, or one INFO line and a WARN per key that
    /// needs a restart.
    pub fn reload_from(&self, path: &Path) -> bool {
        let result = Settings::load(path).and_then(|s| {
            let warnings = s.warnings();
            let level = s.log.level.clone();
            let r = self.reload(s).map_err(ConfigErrors::from)?;
            Ok((r, warnings, level))
        });
        match result {
            Ok((r, warnings, level)) => {
                // Validated with the file; `WXGATE_LOG`, when set, wins.
                if let Err(e) = crate::logfilter::set_level(&level) {
                    tracing::error!("log.level: {e}");
                }
                for key in &r.restart_required {
                    tracing::warn!(
                        key = *key,
                        "config reload: {key} changed but needs a restart; keeping the running value"
                    );
                }
                for w in warnings {
                    tracing::warn!("{w}");
                }
                tracing::info!(generation = r.generation, file = %path.display(), "configuration reloaded");
                true
            }
            Err(errors) => {
                for e in &errors {
                    tracing::error!("config reload failed, keeping the running configuration: {e}");
                }
                false
            }
        }
    }
}
