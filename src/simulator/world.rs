//! The simulated world: apps (official accounts, website apps), users, and the identifiers
//! WeChat derives from them (openid per user and appid, unionid per user and Open Platform
//! account). Loaded from `sim.toml` or built from defaults.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use super::SimError;

/// The default world's certified official account (公众号/服务号).
pub const DEFAULT_APPID: &str = "wx5f3a9c1e7b2d4068";
/// Secret of [`DEFAULT_APPID`].
pub const DEFAULT_SECRET: &str = "3f9d2c7a1b8e4f60a5c3d7e9b1f2a4c6";
/// The default world's website app (网站应用, for qrconnect), bound to the same Open Platform
/// account as [`DEFAULT_APPID`].
pub const DEFAULT_WEBSITE_APPID: &str = "wx8c2e6b4a9d1f3057";
/// Secret of [`DEFAULT_WEBSITE_APPID`].
pub const DEFAULT_WEBSITE_SECRET: &str = "9a1c5e7f3b2d4a6c8e0f1a3b5c7d9e2f";
/// A second official account, bound to no Open Platform account and followed by nobody.
pub const DEFAULT_OTHER_APPID: &str = "wx1d7f3b9e5a2c8064";
/// Secret of [`DEFAULT_OTHER_APPID`].
pub const DEFAULT_OTHER_SECRET: &str = "c4e6a8b0d2f4a6c8e0b2d4f6a8c0e2b4";
/// The Open Platform account the default world's first official account and website app share.
pub const DEFAULT_OPEN_PLATFORM: &str = "open-demo";

/// What kind of WeChat app an appid belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppKind {
    /// 公众号 (服务号): uses `/connect/oauth2/authorize` and `cgi-bin/*`.
    OfficialAccount,
    /// 网站应用 on the Open Platform: uses `/connect/qrconnect` only.
    Website,
}

fn yes() -> bool {
    true
}

fn default_quota() -> u64 {
    2000
}

/// One app of the world (`[[apps]]` in sim.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub appid: String,
    pub secret: String,
    pub kind: AppKind,
    /// 网页授权域名 (official account) or 授权回调域 (website app): bare hosts.
    #[serde(default)]
    pub callback_domains: Vec<String>,
    /// Open Platform account this app is bound to; apps sharing it share unionids.
    #[serde(default)]
    pub open_platform: Option<String>,
    /// Caller IPs allowed on `cgi-bin/token` and `cgi-bin/stable_token`; empty = any.
    #[serde(default)]
    pub ip_whitelist: Vec<std::net::IpAddr>,
    /// Only certified 服务号 may use web authorization; `false` gives 10005.
    #[serde(default = "yes")]
    pub certified: bool,
    /// WeChat rejects any port in redirect_uri (10003). Off by default because local
    /// development always has ports; `true` restores WeChat's rule.
    #[serde(default)]
    pub strict_ports: bool,
    /// Daily quota of `cgi-bin/token` (WeChat: 2000).
    #[serde(default = "default_quota")]
    pub token_daily_quota: u64,
}

/// One user of the world (`[[users]]` in sim.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Appids of the official accounts this user follows.
    #[serde(default)]
    pub follows: Vec<String>,
    /// A snapshot-mode (快照页) virtual account: exchanges carry `is_snapshotuser: 1`.
    #[serde(default)]
    pub snapshot: bool,
    /// Shown by `sns/userinfo`; defaults to the name (snapshot users: 微信用户).
    #[serde(default)]
    pub nickname: Option<String>,
}

/// The whole world, as read from sim.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    #[serde(default)]
    pub users: Vec<UserConfig>,
}

impl Default for SimConfig {
    fn default() -> Self {
        let local = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        SimConfig {
            apps: vec![
                AppConfig {
                    appid: DEFAULT_APPID.into(),
                    secret: DEFAULT_SECRET.into(),
                    kind: AppKind::OfficialAccount,
                    callback_domains: local.clone(),
                    open_platform: Some(DEFAULT_OPEN_PLATFORM.into()),
                    ip_whitelist: vec![],
                    certified: true,
                    strict_ports: false,
                    token_daily_quota: default_quota(),
                },
                AppConfig {
                    appid: DEFAULT_WEBSITE_APPID.into(),
                    secret: DEFAULT_WEBSITE_SECRET.into(),
                    kind: AppKind::Website,
                    callback_domains: local.clone(),
                    open_platform: Some(DEFAULT_OPEN_PLATFORM.into()),
                    ip_whitelist: vec![],
                    certified: true,
                    strict_ports: false,
                    token_daily_quota: default_quota(),
                },
                AppConfig {
                    appid: DEFAULT_OTHER_APPID.into(),
                    secret: DEFAULT_OTHER_SECRET.into(),
                    kind: AppKind::OfficialAccount,
                    callback_domains: local,
                    open_platform: None,
                    ip_whitelist: vec![],
                    certified: true,
                    strict_ports: false,
                    token_daily_quota: default_quota(),
                },
            ],
            users: vec![
                UserConfig {
                    name: "alice".into(),
                    follows: vec![DEFAULT_APPID.into()],
                    snapshot: false,
                    nickname: Some("Alice".into()),
                },
                UserConfig {
                    name: "bob".into(),
                    follows: vec![],
                    snapshot: false,
                    nickname: Some("Bob".into()),
                },
                UserConfig {
                    name: "carol".into(),
                    follows: vec![],
                    snapshot: true,
                    nickname: None,
                },
            ],
        }
    }
}

impl SimConfig {
    /// Reads and validates a sim.toml.
    pub fn from_file(path: impl AsRef<Path>) -> Result<SimConfig, SimError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| SimError::Config(format!("{}: {e}", path.display())))?;
        let cfg = Self::from_toml(&text)
            .map_err(|e| SimError::Config(format!("{}: {e}", path.display())))?;
        Ok(cfg)
    }

    /// Parses and validates sim.toml text.
    pub fn from_toml(text: &str) -> Result<SimConfig, SimError> {
        let cfg: SimConfig = toml::from_str(text).map_err(|e| SimError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the world is coherent: unique names, known follows, bare callback hosts.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |m: String| Err(SimError::Config(m));
        if self.apps.is_empty() {
            return bad("the world needs at least one app".into());
        }
        if self.users.is_empty() {
            return bad("the world needs at least one user".into());
        }
        let mut appids = BTreeSet::new();
        for app in &self.apps {
            if app.appid.is_empty() || app.secret.is_empty() {
                return bad("every app needs a non-empty appid and secret".into());
            }
            if !appids.insert(app.appid.as_str()) {
                return bad(format!("duplicate appid {}", app.appid));
            }
            for d in &app.callback_domains {
                // WeChat's setting is a bare domain: no scheme, port, path or wildcard.
                let bare = !d.is_empty()
                    && d.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
                if !bare {
                    return bad(format!(
                        "app {}: callback domain {d:?} must be a bare host (no scheme, port or path)",
                        app.appid
                    ));
                }
            }
        }
        let mut names = BTreeSet::new();
        for user in &self.users {
            let ok = !user.name.is_empty()
                && user
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return bad(format!(
                    "user name {:?} must be non-empty [A-Za-z0-9_-]",
                    user.name
                ));
            }
            if !names.insert(user.name.as_str()) {
                return bad(format!("duplicate user {}", user.name));
            }
            for f in &user.follows {
                match self.apps.iter().find(|a| &a.appid == f) {
                    Some(a) if a.kind == AppKind::OfficialAccount => {}
                    Some(_) => {
                        return bad(format!(
                            "user {} follows {f}, which is not an official account",
                            user.name
                        ))
                    }
                    None => return bad(format!("user {} follows unknown appid {f}", user.name)),
                }
            }
        }
        Ok(())
    }
}

/// Derives a 27-character id body (base64url alphabet, like WeChat's ids) from a label.
fn derive_id(label: &str, a: &str, b: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [label, a, b] {
        ctx.update(part.as_bytes());
        ctx.update(&[0]);
    }
    let digest = ctx.finish();
    let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
    // WeChat's openids and unionids are 28 characters starting with 'o'.
    format!("o{}", &enc[..27])
}

/// The world, indexed for lookups.
#[derive(Debug)]
pub struct World {
    pub apps: Vec<AppConfig>,
    pub users: Vec<UserConfig>,
    /// (appid, openid) → user index.
    by_openid: HashMap<(String, String), usize>,
}

impl World {
    pub fn new(cfg: SimConfig) -> Result<World, SimError> {
        cfg.validate()?;
        let mut by_openid = HashMap::new();
        for app in &cfg.apps {
            for (i, u) in cfg.users.iter().enumerate() {
                by_openid.insert((app.appid.clone(), openid_of(&u.name, &app.appid)), i);
            }
        }
        Ok(World {
            apps: cfg.apps,
            users: cfg.users,
            by_openid,
        })
    }

    pub fn app(&self, appid: &str) -> Option<&AppConfig> {
        self.apps.iter().find(|a| a.appid == appid)
    }

    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The user an openid of `appid` belongs to.
    pub fn user_by_openid(&self, appid: &str, openid: &str) -> Option<&UserConfig> {
        self.by_openid
            .get(&(appid.to_string(), openid.to_string()))
            .and_then(|&i| self.users.get(i))
    }

    pub fn openid(&self, user: &str, appid: &str) -> Option<String> {
        self.user(user)?;
        self.app(appid)?;
        Some(openid_of(user, appid))
    }

    /// The unionid, only when the app is bound to an Open Platform account.
    pub fn unionid(&self, user: &str, appid: &str) -> Option<String> {
        self.user(user)?;
        let op = self.app(appid)?.open_platform.as_deref()?;
        Some(derive_id("wxgate-sim unionid", op, user))
    }

    pub fn follows(&self, user: &str, appid: &str) -> bool {
        self.user(user)
            .is_some_and(|u| u.follows.iter().any(|f| f == appid))
    }
}

fn openid_of(user: &str, appid: &str) -> String {
    derive_id("wxgate-sim openid", appid, user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_world_is_valid_and_ids_have_wechat_shape() {
        let w = World::new(SimConfig::default()).expect("default world");
        let a = w.openid("alice", DEFAULT_APPID).expect("openid");
        assert_eq!(a.len(), 28);
        assert!(a.starts_with('o'));
        assert_eq!(Some(a.clone()), w.openid("alice", DEFAULT_APPID));
        assert_ne!(Some(a.clone()), w.openid("alice", DEFAULT_OTHER_APPID));
        assert_ne!(Some(a.clone()), w.openid("bob", DEFAULT_APPID));
        assert_eq!(
            w.user_by_openid(DEFAULT_APPID, &a).map(|u| u.name.as_str()),
            Some("alice")
        );
        assert!(w.user_by_openid(DEFAULT_OTHER_APPID, &a).is_none());
        let u1 = w.unionid("alice", DEFAULT_APPID).expect("bound");
        assert_eq!(Some(u1.clone()), w.unionid("alice", DEFAULT_WEBSITE_APPID));
        assert_eq!(u1.len(), 28);
        assert!(w.unionid("alice", DEFAULT_OTHER_APPID).is_none());
        assert!(DEFAULT_APPID.len() == 18 && DEFAULT_APPID.starts_with("wx"));
        assert!(DEFAULT_APPID[2..].chars().all(|c| c.is_ascii_hexdigit()));
        assert!(
            DEFAULT_SECRET.len() == 32 && DEFAULT_SECRET.chars().all(|c| c.is_ascii_hexdigit())
        );
    }

    #[test]
    fn example_file_is_the_default_world() {
        let cfg = SimConfig::from_toml(include_str!("../../sim.example.toml")).expect("example");
        let def = SimConfig::default();
        assert_eq!(cfg.apps.len(), def.apps.len());
        for (a, b) in cfg.apps.iter().zip(&def.apps) {
            assert_eq!((&a.appid, &a.secret, a.kind), (&b.appid, &b.secret, b.kind));
            assert_eq!(a.open_platform, b.open_platform);
            assert_eq!(a.callback_domains, b.callback_domains);
        }
        let names: Vec<_> = cfg
            .users
            .iter()
            .map(|u| (u.name.as_str(), u.snapshot, u.follows.clone()))
            .collect();
        let want: Vec<_> = def
            .users
            .iter()
            .map(|u| (u.name.as_str(), u.snapshot, u.follows.clone()))
            .collect();
        assert_eq!(names, want);
    }

    #[test]
    fn from_file_reports_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sim.toml");
        std::fs::write(&p, "[[apps]]\nappid = 1\n").expect("write");
        let e = SimConfig::from_file(&p).expect_err("bad file");
        assert!(e.to_string().contains("sim.toml"), "{e}");
        assert!(SimConfig::from_file(dir.path().join("missing.toml")).is_err());
    }

    #[test]
    fn config_rejects_unknown_keys_ports_and_bad_follows() {
        assert!(SimConfig::from_toml("bogus = 1").is_err());
        let base = r#"
[[apps]]
appid = "wx1"
secret = "s"
kind = "official_account"
callback_domains = ["localhost:8080"]
[[users]]
name = "u"
"#;
        assert!(SimConfig::from_toml(base).is_err());
        let follows = r#"
[[apps]]
appid = "wx1"
secret = "s"
kind = "official_account"
[[users]]
name = "u"
follows = ["wx2"]
"#;
        assert!(SimConfig::from_toml(follows).is_err());
        let ok = r#"
[[apps]]
appid = "wx1"
secret = "s"
kind = "official_account"
callback_domains = ["example.com"]
ip_whitelist = ["127.0.0.1"]
[[users]]
name = "u"
follows = ["wx1"]
"#;
        let cfg = SimConfig::from_toml(ok).expect("valid");
        assert_eq!(cfg.apps[0].token_daily_quota, 2000);
        assert!(cfg.apps[0].certified);
    }
}
