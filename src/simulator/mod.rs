//! WeChat simulator: a local stand-in for `open.weixin.qq.com` (authorize pages) and
//! `api.weixin.qq.com` (token and user APIs) on one port, with a `/_sim/` control API for
//! time and fault injection. See `docs/simulator.md`.

mod api;
mod authorize;
mod clock;
mod control;
mod http;
mod server;
mod state;
mod world;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use control::{Fault, FaultCount, FaultKind, UntilCleared};
pub use world::{
    AppConfig, AppKind, SimConfig, UserConfig, DEFAULT_APPID, DEFAULT_OPEN_PLATFORM,
    DEFAULT_OTHER_APPID, DEFAULT_OTHER_SECRET, DEFAULT_SECRET, DEFAULT_WEBSITE_APPID,
    DEFAULT_WEBSITE_SECRET,
};

/// Every WeChat endpoint the simulator serves (the keys of [`SimHandle::stats`]).
pub const ENDPOINTS: &[&str] = &[
    "/connect/oauth2/authorize",
    "/connect/qrconnect",
    "/sns/oauth2/access_token",
    "/sns/oauth2/refresh_token",
    "/sns/userinfo",
    "/sns/auth",
    "/cgi-bin/token",
    "/cgi-bin/stable_token",
    "/cgi-bin/user/info",
];

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("simulator config: {0}")]
    Config(String),
    #[error("simulator I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Shared simulator core: the world, the clock, protocol state, faults and counters.
#[derive(Debug)]
pub(crate) struct Sim {
    pub world: world::World,
    pub clock: clock::Clock,
    pub state: Mutex<state::State>,
    pub control: Mutex<control::Control>,
}

impl Sim {
    fn inject(&self, f: Fault) {
        if let Ok(mut c) = self.control.lock() {
            c.add(f);
        }
    }

    fn reset(&self) {
        if let Ok(mut c) = self.control.lock() {
            c.reset();
        }
        if let Ok(mut s) = self.state.lock() {
            *s = state::State::default();
        }
        self.clock.reset();
    }

    /// Locks the protocol state; a poisoned lock (a panicked handler) is recovered, since the
    /// state stays structurally valid between statements.
    fn state(&self) -> std::sync::MutexGuard<'_, state::State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running simulator. Dropping it (or [`SimHandle::shutdown`]) stops serving.
#[derive(Debug)]
pub struct SimHandle {
    sim: Arc<Sim>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

/// Starts the simulator on `addr` (port 0 picks a free port).
pub async fn start(cfg: SimConfig, addr: SocketAddr) -> std::io::Result<SimHandle> {
    let world = world::World::new(cfg)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let sim = Arc::new(Sim {
        world,
        clock: clock::Clock::default(),
        state: Mutex::new(state::State::default()),
        control: Mutex::new(control::Control::default()),
    });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(server::serve(listener, sim.clone()));
    Ok(SimHandle { sim, addr, task })
}

impl SimHandle {
    /// `http://HOST:PORT`, no trailing slash: use it as both `api_base` and `open_base`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Moves the simulator's clock forward (codes, tokens and quotas follow it).
    pub fn advance_clock(&self, d: Duration) {
        self.sim.clock.advance(d);
    }

    /// Same as `POST /_sim/faults`.
    pub fn inject(&self, fault: Fault) {
        self.sim.inject(fault);
    }

    /// Removes every injected fault (same as `DELETE /_sim/faults`).
    pub fn clear_faults(&self) {
        if let Ok(mut c) = self.sim.control.lock() {
            c.clear_faults();
        }
    }

    /// Forgets codes, tokens, consents, faults and counters and resets the clock.
    pub fn reset(&self) {
        self.sim.reset();
    }

    /// Per-endpoint call counters, keyed by path (e.g. `/cgi-bin/stable_token`).
    pub fn stats(&self) -> BTreeMap<String, u64> {
        self.sim
            .control
            .lock()
            .map(|c| c.stats())
            .unwrap_or_default()
    }

    pub fn openid(&self, user: &str, appid: &str) -> Option<String> {
        self.sim.world.openid(user, appid)
    }

    pub fn unionid(&self, user: &str, appid: &str) -> Option<String> {
        self.sim.world.unionid(user, appid)
    }

    /// Stops serving: the listener and every open connection are closed.
    pub fn shutdown(self) {
        // Drop does the work.
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `wxgate simulate`: loads the config (defaults without one), serves until Ctrl-C.
pub async fn run_cli(listen: SocketAddr, config: Option<PathBuf>) -> Result<(), SimError> {
    let cfg = match &config {
        Some(p) => SimConfig::from_file(p)?,
        None => SimConfig::default(),
    };
    let handle = start(cfg, listen).await?;
    let url = handle.url();
    println!("WeChat simulator listening on {url}");
    println!("  point the gateway at it: api_base = open_base = \"{url}\"");
    println!("  world and ids: {url}/_sim/world   who is in the phone: {url}/_sim/users");
    if config.is_none() {
        println!("  default world: official account {DEFAULT_APPID} (secret {DEFAULT_SECRET}), users alice, bob, carol");
    }
    tokio::signal::ctrl_c().await?;
    handle.shutdown();
    Ok(())
}
