//! `gateway.toml`: the raw serde shape (`deny_unknown_fields` everywhere) and its validation
//! into typed [`Settings`]. Every error names the file, the dotted key and the reason, and the
//! binary turns it into exit status 78 (EX_CONFIG).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// A configuration error: which file, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------------------------
// Raw shape, exactly as written in gateway.toml.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    wechat: Option<RawWechat>,
    session: Option<RawSession>,
    jwt: Option<RawJwt>,
    #[serde(default)]
    route: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: String,
    public_url: Option<String>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    request_timeout: Option<String>,
    shutdown_timeout: Option<String>,
    keepalive_timeout: Option<String>,
    upstream_idle_timeout: Option<String>,
    /// A number or `"auto"`: kept as a TOML value so a wrong type gets the same clear error.
    workers: Option<toml::Value>,
    max_request_header_bytes: Option<u64>,
    upstream_ca: Option<String>,
    tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: String,
    key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWechat {
    appid: String,
    secret: String,
    api_base: Option<String>,
    open_base: Option<String>,
    unionid: Option<String>,
    token_endpoint: Option<String>,
    allow_wecom: Option<bool>,
    timeout: Option<String>,
    #[serde(default)]
    verify_files: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    secret: OneOrMany,
    ttl: Option<String>,
    cookie_name: Option<String>,
    cache_max_entries: Option<u64>,
    cache_max_bytes: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    header: Option<String>,
    algorithm: Option<String>,
    private_key: Option<String>,
    secret: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
    ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    host: Option<String>,
    path: Option<String>,
    upstream: String,
    auth: Option<String>,
    non_wechat: Option<String>,
    api: Option<bool>,
    /// `Upgrade` tokens tunnelled to the upstream; absent means `["websocket"]`.
    upgrades: Option<Vec<String>>,
    /// An integer (bytes) or a string with a unit: kept as a TOML value so a wrong type gets
    /// the same clear error as a bad string.
    max_body: Option<toml::Value>,
    preflight: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Typed settings.
// ---------------------------------------------------------------------------------------------

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file it came from (for messages), if any.
    pub source: PathBuf,
    pub server: ServerSettings,
    pub wechat: Option<WechatSettings>,
    pub session: Option<SessionSettings>,
    pub jwt: Option<JwtSettings>,
    pub routes: Vec<RouteSettings>,
}

/// Upper bound for `server.workers`.
const MAX_WORKERS: usize = 256;

/// `server.workers = "auto"`: one worker per CPU the process may run on, like nginx's
/// `worker_processes auto`.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS))
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Origin (`scheme://host[:port]`, no trailing slash) that WeChat redirects back to.
    pub public_url: Option<String>,
    pub trusted_proxies: Vec<IpNet>,
    pub request_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// How long an idle keep-alive client connection is kept open.
    pub keepalive_timeout: Duration,
    /// How long an idle pooled upstream connection is kept open.
    pub upstream_idle_timeout: Duration,
    /// Threads that serve connections, each with its own event loop and upstream pool.
    pub workers: usize,
    pub max_request_header_bytes: usize,
    /// Extra CA certificates trusted for https upstreams, besides the public web roots.
    pub upstream_ca: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub tls: Option<TlsSettings>,
}

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnionIdMode {
    Off,
    Follower,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenEndpoint {
    Stable,
    Classic,
}

/// `Debug` is safe to derive: [`Secret`] prints only its length.
#[derive(Clone, Debug)]
pub struct WechatSettings {
    pub appid: String,
    pub secret: Secret,
    pub api_base: String,
    pub open_base: String,
    pub unionid: UnionIdMode,
    pub token_endpoint: TokenEndpoint,
    pub allow_wecom: bool,
    pub timeout: Duration,
    pub verify_files: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
pub struct SessionSettings {
    /// Master keys, current first; older ones are still accepted (rotation).
    pub keys: Vec<Secret>,
    pub ttl: Duration,
    pub cookie_name: String,
    /// Most sessions kept in the in-memory session cache.
    pub cache_max_entries: usize,
    /// Approximate bytes the session cache may hold.
    pub cache_max_bytes: usize,
}

/// The JWT algorithms, shared with the signer so the two can never disagree.
/// Signing algorithms wxgate supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    ES256,
    EdDSA,
}

impl JwtAlgorithm {
    /// The JOSE name ("HS256", "RS256", "ES256", "EdDSA").
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::ES256 => "ES256",
            JwtAlgorithm::EdDSA => "EdDSA",
        }
    }
}

impl std::str::FromStr for JwtAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "HS256" => Ok(JwtAlgorithm::HS256),
            "RS256" => Ok(JwtAlgorithm::RS256),
            "ES256" => Ok(JwtAlgorithm::ES256),
            "EdDSA" => Ok(JwtAlgorithm::EdDSA),
            other => Err(format!(
                "unknown JWT algorithm {other:?}: expected HS256, RS256, ES256 or EdDSA"
            )),
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug)]
pub enum JwtKey {
    /// PEM text of a private key (RS256, ES256, EdDSA); `path` for messages.
    Pem { path: PathBuf, pem: Secret },
    /// HS256 shared secret.
    Shared(Secret),
}

#[derive(Clone, Debug)]
pub struct JwtSettings {
    /// Header name as configured; `Authorization` means `Bearer <jwt>`.
    pub header: http::HeaderName,
    pub algorithm: JwtAlgorithm,
    pub key: JwtKey,
    pub issuer: String,
    pub audience: String,
    pub ttl: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    Required,
    Optional,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonWechat {
    Deny,
    Pass,
    Login,
}

#[derive(Clone, Debug)]
pub struct RouteSettings {
    pub name: String,
    /// Lower-case host without port; `None` matches any host.
    pub host: Option<String>,
    /// Path prefix, starting with `/`.
    pub path: String,
    pub upstream: Upstream,
    pub auth: AuthMode,
    pub non_wechat: NonWechat,
    pub api: bool,
    /// `Upgrade` protocol tokens this route tunnels, lower-case; empty: no upgrades at all.
    pub upgrades: Vec<String>,
    /// Largest request body in bytes; `None`: unlimited.
    pub max_body: Option<u64>,
    /// What a CORS preflight on an `api` route gets (always `Auth` on other routes).
    pub preflight: Preflight,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preflight {
    /// `OPTIONS` with `Access-Control-Request-Method` goes upstream without authentication.
    Pass,
    /// Preflights are authenticated like any other request.
    Auth,
}

#[derive(Clone, Debug)]
pub struct Upstream {
    /// The URL as written (for `wxgate check` and logs).
    pub url: String,
    pub https: bool,
    /// `host[:port]`, as sent in the request line authority.
    pub authority: http::uri::Authority,
    /// Base path without a trailing slash; empty when the upstream has no path.
    pub base_path: String,
}

/// Bytes that must never be printed: `Debug` shows only the length.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

// ---------------------------------------------------------------------------------------------
// Loading.
// ---------------------------------------------------------------------------------------------

/// The config path from `-c`, else `WXGATE_CONFIG`, else `./gateway.toml`.
pub fn default_path() -> PathBuf {
    std::env::var_os("WXGATE_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("gateway.toml"))
}

impl Settings {
    /// Reads and validates a file. Relative paths inside it (TLS, JWT keys) are resolved
    /// against the file's directory, so `wxgate -c /etc/wxgate/gateway.toml` works from anywhere.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: String::new(),
            reason: format!("cannot read: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, path, base, &|name| std::env::var(name).ok())
    }

    /// Parses TOML text. `env` looks up `${NAME}` references (injected for tests).
    pub fn from_toml(
        text: &str,
        file: &Path,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let err = |key: &str, reason: String| ConfigError {
            file: file.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        let mut value: toml::Value = toml::from_str(text).map_err(|e| {
            // toml's message carries the line, the column and the offending key.
            err("", e.to_string().trim_end().replace('\n', " "))
        })?;
        expand_env(&mut value, &mut String::new(), env)
            .map_err(|(key, reason)| err(&key, reason))?;
        let raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            // toml appends "\nin `table`\n" to the message; the key already says where, and
            // the error must stay on one line.
            let reason = e.into_inner().to_string();
            let reason: Vec<&str> = reason
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("in `"))
                .collect();
            err(&key, reason.join(" "))
        })?;
        Validator { file, base_dir }.settings(raw)
    }

    /// Settings that load but that WeChat itself would refuse (reference §1, §11.2): the
    /// authorize page would show 10003 and never call back, so say so at start-up.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.needs_auth() {
            return out;
        }
        match &self.server.public_url {
            None => out.push(
                "server.public_url is not set: the callback URL follows each request's Host header; \
                 set it to the origin registered as 网页授权域名"
                    .to_string(),
            ),
            Some(url) => {
                if let Ok(u) = url::Url::parse(url) {
                    if u.port().is_some() {
                        out.push(format!(
                            "server.public_url {url} has a port: WeChat's 网页授权域名 cannot have one (error 10003); \
                             fine only with the simulator"
                        ));
                    }
                    if u.scheme() == "http" {
                        out.push(format!(
                            "server.public_url {url} is plain HTTP: session cookies travel unencrypted; use https"
                        ));
                    }
                }
            }
        }
        out
    }

    /// Whether any route uses WeChat authentication.
    pub fn needs_auth(&self) -> bool {
        self.routes.iter().any(|r| r.auth != AuthMode::Off)
    }
}

/// Replaces `${NAME}` in every string value; an unset variable is an error naming the key.
fn expand_env(
    value: &mut toml::Value,
    path: &mut String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), (String, String)> {
    match value {
        toml::Value::String(s) if s.contains("${") => {
            *s = expand_str(s, env).map_err(|reason| (path.clone(), reason))?;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                expand_env(item, path, env)?;
                path.truncate(len);
            }
        }
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                expand_env(v, path, env)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand_str(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated ${...} reference".to_string())?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "invalid environment variable name {name:?} in ${{...}}"
            ));
        }
        let val = env(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
        out.push_str(&val);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?} ({e}); write e.g. \"30s\", \"5m\", \"7d\""))?;
    if d.is_zero() {
        return Err(format!("duration {s:?} must be greater than zero"));
    }
    Ok(d)
}

/// `"32MB"`, `"512KB"`, `"1GB"`, `"4096B"` or `"4096"`: binary units (1KB = 1024 bytes), case
/// and a space before the unit ignored. `None` for anything else or on overflow.
fn parse_cache_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let n: u64 = t[..digits].parse().ok()?;
    let shift = match t[digits..].trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "KB" | "K" | "KIB" => 10,
        "MB" | "M" | "MIB" => 20,
        "GB" | "G" | "GIB" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// A session or JWT secret: base64 that decodes to >= 32 bytes, else >= 32 raw bytes.
pub fn parse_secret(s: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    for engine in engines {
        if let Ok(bytes) = engine.decode(s.trim()) {
            if bytes.len() >= 32 {
                return Ok(bytes);
            }
        }
    }
    if s.len() >= 32 {
        return Ok(s.as_bytes().to_vec());
    }
    Err(format!(
        "must be at least 32 bytes, raw or base64 (got {} bytes); generate one with `openssl rand -base64 32`",
        s.len()
    ))
}

struct Validator<'a> {
    file: &'a Path,
    base_dir: &'a Path,
}

impl Validator<'_> {
    fn err(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    fn duration(
        &self,
        key: &str,
        v: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => parse_duration(s).map_err(|r| self.err(key, r)),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    fn settings(&self, raw: RawConfig) -> Result<Settings, ConfigError> {
        let server = self.server(raw.server)?;
        let wechat = raw.wechat.map(|w| self.wechat(w)).transpose()?;
        let session = raw.session.map(|s| self.session(s)).transpose()?;
        let jwt = raw.jwt.map(|j| self.jwt(j)).transpose()?;
        if raw.route.is_empty() {
            return Err(self.err("route", "at least one [[route]] is required"));
        }
        let mut routes = Vec::with_capacity(raw.route.len());
        let mut names = HashSet::new();
        let mut places = HashSet::new();
        for (i, r) in raw.route.into_iter().enumerate() {
            let route = self.route(i, r, wechat.is_some())?;
            if !names.insert(route.name.clone()) {
                return Err(self.err(
                    &format!("route[{i}].name"),
                    format!("duplicate route name {:?}", route.name),
                ));
            }
            if !places.insert((route.host.clone(), route.path.clone())) {
                return Err(self.err(
                    &format!("route[{i}].path"),
                    format!(
                        "duplicate route: another route already serves host {} with path prefix {:?}",
                        route.host.as_deref().unwrap_or("(any)"),
                        route.path
                    ),
                ));
            }
            routes.push(route);
        }
        if let Some(i) = routes.iter().position(|r| r.auth != AuthMode::Off) {
            let key = format!("route[{i}].auth");
            if wechat.is_none() {
                return Err(self.err(&key, "authentication needs a [wechat] section"));
            }
            if session.is_none() {
                return Err(self.err(
                    &key,
                    "authentication needs a [session] section with a secret",
                ));
            }
            if jwt.is_none() {
                return Err(self.err(&key, "authentication needs a [jwt] section"));
            }
        }
        Ok(Settings {
            source: self.file.to_path_buf(),
            server,
            wechat,
            session,
            jwt,
            routes,
        })
    }

    fn server(&self, s: RawServer) -> Result<ServerSettings, ConfigError> {
        let listen: SocketAddr = s.listen.trim().parse().map_err(|_| {
            self.err(
                "server.listen",
                format!(
                    "invalid address {:?}; expected ip:port such as \"127.0.0.1:8080\"",
                    s.listen
                ),
            )
        })?;
        let public_url = s
            .public_url
            .map(|u| parse_origin(&u).map_err(|r| self.err("server.public_url", r)))
            .transpose()?;
        let mut trusted_proxies = Vec::new();
        for (i, cidr) in s.trusted_proxies.iter().enumerate() {
            let key = format!("server.trusted_proxies[{i}]");
            let net = parse_cidr(cidr).map_err(|r| self.err(&key, r))?;
            trusted_proxies.push(net);
        }
        let request_timeout = self.duration(
            "server.request_timeout",
            s.request_timeout.as_deref(),
            Duration::from_secs(30),
        )?;
        let shutdown_timeout = self.duration(
            "server.shutdown_timeout",
            s.shutdown_timeout.as_deref(),
            Duration::from_secs(30),
        )?;
        let keepalive_timeout = self.duration(
            "server.keepalive_timeout",
            s.keepalive_timeout.as_deref(),
            Duration::from_secs(30),
        )?;
        let upstream_idle_timeout = self.duration(
            "server.upstream_idle_timeout",
            s.upstream_idle_timeout.as_deref(),
            Duration::from_secs(60),
        )?;
        let workers = match s.workers {
            None => default_workers(),
            Some(toml::Value::String(n)) if n == "auto" => default_workers(),
            Some(toml::Value::Integer(n)) if (1..=MAX_WORKERS as i64).contains(&n) => n as usize,
            Some(_) => {
                return Err(self.err(
                    "server.workers",
                    format!("must be \"auto\" or a number from 1 to {MAX_WORKERS}"),
                ))
            }
        };
        let max_request_header_bytes = match s.max_request_header_bytes {
            None => 16 * 1024,
            Some(n) if (1024..=1024 * 1024).contains(&n) => n as usize,
            Some(n) => {
                return Err(self.err(
                    "server.max_request_header_bytes",
                    format!("{n} is out of range (1024 to 1048576)"),
                ))
            }
        };
        let tls = s.tls.map(|t| TlsSettings {
            cert: self.path(&t.cert),
            key: self.path(&t.key),
        });
        let upstream_ca = match s.upstream_ca {
            None => Vec::new(),
            Some(p) => {
                let path = self.path(&p);
                let certs =
                    crate::tls::load_certs(&path).map_err(|r| self.err("server.upstream_ca", r))?;
                crate::tls::upstream_client_config(&certs)
                    .map_err(|r| self.err("server.upstream_ca", r))?;
                certs
            }
        };
        Ok(ServerSettings {
            listen,
            public_url,
            trusted_proxies,
            request_timeout,
            shutdown_timeout,
            keepalive_timeout,
            upstream_idle_timeout,
            workers,
            max_request_header_bytes,
            upstream_ca,
            tls,
        })
    }

    fn wechat(&self, w: RawWechat) -> Result<WechatSettings, ConfigError> {
        let appid = w.appid.trim().to_string();
        if appid.is_empty() || appid.len() > 64 || !appid.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(self.err("wechat.appid", "must be the Official Account's appid (letters and digits, e.g. \"wx0123456789abcdef\")"));
        }
        if w.secret.trim().is_empty() {
            return Err(self.err(
                "wechat.secret",
                "must not be empty (use \"${WECHAT_APPSECRET}\")",
            ));
        }
        let api_base = base_url(w.api_base.as_deref().unwrap_or("https://api.weixin.qq.com"))
            .map_err(|r| self.err("wechat.api_base", r))?;
        let open_base = base_url(
            w.open_base
                .as_deref()
                .unwrap_or("https://open.weixin.qq.com"),
        )
        .map_err(|r| self.err("wechat.open_base", r))?;
        let unionid = match w.unionid.as_deref().unwrap_or("off") {
            "off" => UnionIdMode::Off,
            "follower" => UnionIdMode::Follower,
            other => {
                return Err(self.err(
                    "wechat.unionid",
                    format!("{other:?} is not one of \"off\", \"follower\""),
                ))
            }
        };
        let token_endpoint = match w.token_endpoint.as_deref().unwrap_or("stable") {
            "stable" => TokenEndpoint::Stable,
            "classic" => TokenEndpoint::Classic,
            other => {
                return Err(self.err(
                    "wechat.token_endpoint",
                    format!("{other:?} is not one of \"stable\", \"classic\""),
                ))
            }
        };
        let timeout = self.duration(
            "wechat.timeout",
            w.timeout.as_deref(),
            Duration::from_secs(5),
        )?;
        for name in w.verify_files.keys() {
            // Served at the root, so the name must be a plain file name WeChat would ask for.
            let ok = name.ends_with(".txt")
                && name.len() <= 128
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
                && !name.starts_with('.');
            if !ok {
                return Err(self.err(
                    &format!("wechat.verify_files.{name}"),
                    "must be a plain file name ending in .txt, such as \"MP_verify_abc123.txt\"",
                ));
            }
        }
        Ok(WechatSettings {
            appid,
            secret: Secret::new(w.secret.trim().as_bytes().to_vec()),
            api_base,
            open_base,
            unionid,
            token_endpoint,
            allow_wecom: w.allow_wecom.unwrap_or(false),
            timeout,
            verify_files: w.verify_files,
        })
    }

    fn session(&self, s: RawSession) -> Result<SessionSettings, ConfigError> {
        let raw_keys: Vec<(String, String)> = match s.secret {
            OneOrMany::One(k) => vec![("session.secret".to_string(), k)],
            OneOrMany::Many(ks) => ks
                .into_iter()
                .enumerate()
                .map(|(i, k)| (format!("session.secret[{i}]"), k))
                .collect(),
        };
        if raw_keys.is_empty() {
            return Err(self.err("session.secret", "needs at least one key"));
        }
        let mut keys = Vec::new();
        for (key, value) in raw_keys {
            keys.push(Secret::new(
                parse_secret(&value).map_err(|r| self.err(&key, r))?,
            ));
        }
        let ttl = self.duration(
            "session.ttl",
            s.ttl.as_deref(),
            Duration::from_secs(7 * 86400),
        )?;
        let cookie_name = s
            .cookie_name
            .unwrap_or_else(|| "wxgate_session".to_string());
        let valid_name = !cookie_name.is_empty()
            && cookie_name.len() <= 64
            && cookie_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            && !cookie_name.starts_with("__");
        if !valid_name {
            return Err(self.err(
                "session.cookie_name",
                "must be letters, digits, '_' or '-' and must not start with \"__\" (\"__Host-\" is added on HTTPS)",
            ));
        }
        // The gateway's other cookies (login state, loop guard, snapshot mark): the same name
        // would mix two cookies, and each cookie's name is its seal's associated data.
        if ["wxgate_state", "wxgate_guard", "wxgate_snapshot"].contains(&cookie_name.as_str())
            || cookie_name.starts_with("wxgate_state_")
        {
            return Err(self.err(
                "session.cookie_name",
                "is the name of one of the gateway's other cookies (wxgate_state, wxgate_state_*, wxgate_guard, wxgate_snapshot)",
            ));
        }
        let cache_max_entries = match s.cache_max_entries {
            None => 10_000,
            Some(n @ 1..=10_000_000) => n as usize,
            Some(n) => {
                return Err(self.err(
                    "session.cache_max_entries",
                    format!("{n} is out of range: 1 to 10000000"),
                ))
            }
        };
        let cache_max_bytes = match s.cache_max_bytes.as_deref() {
            None => 32 << 20,
            Some(text) => match parse_cache_size(text) {
                Some(n @ 65_536..=17_179_869_184) => n as usize,
                _ => {
                    return Err(self.err(
                        "session.cache_max_bytes",
                        format!(
                            "{text:?} is not a size from \"64KB\" to \"16GB\" (a number with B, KB, MB or GB; 1KB = 1024 bytes)"
                        ),
                    ))
                }
            },
        };
        Ok(SessionSettings {
            keys,
            ttl,
            cookie_name,
            cache_max_entries,
            cache_max_bytes,
        })
    }

    fn jwt(&self, j: RawJwt) -> Result<JwtSettings, ConfigError> {
        let header_name = j.header.unwrap_or_else(|| "X-WeChat-JWT".to_string());
        let header = http::HeaderName::from_bytes(header_name.as_bytes()).map_err(|_| {
            self.err(
                "jwt.header",
                format!("{header_name:?} is not a valid header name"),
            )
        })?;
        let algorithm: JwtAlgorithm = j
            .algorithm
            .as_deref()
            .unwrap_or("ES256")
            .parse()
            .map_err(|r: String| self.err("jwt.algorithm", r))?;
        let key = match (algorithm, j.private_key, j.secret) {
            (JwtAlgorithm::HS256, None, Some(secret)) => JwtKey::Shared(Secret::new(
                parse_secret(&secret).map_err(|r| self.err("jwt.secret", r))?,
            )),
            (JwtAlgorithm::HS256, _, None) => {
                return Err(self.err("jwt.secret", "HS256 needs a secret"))
            }
            (JwtAlgorithm::HS256, Some(_), Some(_)) => {
                return Err(self.err(
                    "jwt.private_key",
                    "HS256 uses jwt.secret; remove jwt.private_key",
                ))
            }
            (_, Some(_), Some(_)) => {
                return Err(self.err(
                    "jwt.secret",
                    format!(
                        "{} uses jwt.private_key; remove jwt.secret",
                        algorithm.as_str()
                    ),
                ))
            }
            (_, None, _) => {
                return Err(self.err(
                    "jwt.private_key",
                    format!(
                        "{} needs a PEM private key file (see certs/README.md)",
                        algorithm.as_str()
                    ),
                ))
            }
            (_, Some(p), None) => {
                let path = self.path(&p);
                let pem = std::fs::read(&path).map_err(|e| {
                    self.err(
                        "jwt.private_key",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                JwtKey::Pem {
                    path,
                    pem: Secret::new(pem),
                }
            }
        };
        let issuer = j.issuer.unwrap_or_else(|| "wxgate".to_string());
        if issuer.is_empty() {
            return Err(self.err("jwt.issuer", "must not be empty"));
        }
        let audience = j.audience.unwrap_or_else(|| "upstream".to_string());
        if audience.is_empty() {
            return Err(self.err("jwt.audience", "must not be empty"));
        }
        let ttl = self.duration("jwt.ttl", j.ttl.as_deref(), Duration::from_secs(300))?;
        if ttl < Duration::from_secs(30) {
            return Err(self.err(
                "jwt.ttl",
                "must be at least 30s (tokens are reused until near expiry)",
            ));
        }
        Ok(JwtSettings {
            header,
            algorithm,
            key,
            issuer,
            audience,
            ttl,
        })
    }

    fn route(&self, i: usize, r: RawRoute, has_wechat: bool) -> Result<RouteSettings, ConfigError> {
        let key = |k: &str| format!("route[{i}].{k}");
        let name = r.name.trim().to_string();
        if name.is_empty() {
            return Err(self.err(&key("name"), "must not be empty"));
        }
        let host = match r.host {
            None => None,
            Some(h) => {
                let h = h.trim().to_ascii_lowercase();
                let ok = !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
                if !ok {
                    return Err(self.err(
                        &key("host"),
                        format!("{h:?} is not a host name (no scheme, port or path)"),
                    ));
                }
                Some(h)
            }
        };
        let path = r.path.unwrap_or_else(|| "/".to_string());
        if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
            return Err(self.err(
                &key("path"),
                format!("{path:?} must be a path prefix starting with '/'"),
            ));
        }
        if path == "/_wxgate" || path.starts_with("/_wxgate/") {
            return Err(self.err(&key("path"), "/_wxgate/ is reserved for the gateway"));
        }
        let upstream =
            parse_upstream(&r.upstream).map_err(|reason| self.err(&key("upstream"), reason))?;
        // Fail closed: with WeChat configured, a route authenticates unless it says otherwise.
        let default_auth = if has_wechat { "required" } else { "off" };
        let auth = match r.auth.as_deref().unwrap_or(default_auth) {
            "required" => AuthMode::Required,
            "optional" => AuthMode::Optional,
            "off" => AuthMode::Off,
            other => {
                return Err(self.err(
                    &key("auth"),
                    format!("{other:?} is not one of \"required\", \"optional\", \"off\""),
                ))
            }
        };
        let non_wechat = match r.non_wechat.as_deref().unwrap_or("deny") {
            "deny" => NonWechat::Deny,
            "pass" => NonWechat::Pass,
            "login" => NonWechat::Login,
            other => {
                return Err(self.err(
                    &key("non_wechat"),
                    format!("{other:?} is not one of \"deny\", \"pass\", \"login\""),
                ))
            }
        };
        let api = r.api.unwrap_or(false);
        let upgrades = match r.upgrades {
            None => vec!["websocket".to_string()],
            Some(list) => {
                let mut out = Vec::with_capacity(list.len());
                for (j, t) in list.into_iter().enumerate() {
                    let t = parse_upgrade_token(&t)
                        .map_err(|reason| self.err(&key(&format!("upgrades[{j}]")), reason))?;
                    out.push(t);
                }
                out
            }
        };
        let max_body = r
            .max_body
            .as_ref()
            .map(parse_byte_size)
            .transpose()
            .map_err(|reason| self.err(&key("max_body"), reason))?;
        let preflight = match r.preflight.as_deref() {
            None | Some("pass") if api => Preflight::Pass,
            None => Preflight::Auth,
            Some("auth") if api => Preflight::Auth,
            Some(other @ ("pass" | "auth")) => {
                return Err(self.err(
                    &key("preflight"),
                    format!("{other:?} applies only to api = true routes"),
                ))
            }
            Some(other) => {
                return Err(self.err(
                    &key("preflight"),
                    format!("{other:?} is not one of \"pass\", \"auth\""),
                ))
            }
        };
        Ok(RouteSettings {
            name,
            host,
            path,
            upstream,
            auth,
            non_wechat,
            api,
            upgrades,
            max_body,
            preflight,
        })
    }
}

/// One `Upgrade` protocol (RFC 9110 §7.8: `name[/version]`), lower-cased for comparison.
fn parse_upgrade_token(t: &str) -> Result<String, String> {
    let t = t.trim().to_ascii_lowercase();
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    let valid =
        t.split_once('/')
            .map_or(!t.is_empty() && t.chars().all(tchar), |(name, version)| {
                !name.is_empty()
                    && !version.is_empty()
                    && name.chars().all(tchar)
                    && version.chars().all(tchar)
            });
    if !valid {
        return Err(format!(
            "{t:?} is not an Upgrade protocol token such as \"websocket\""
        ));
    }
    // An h2c tunnel would carry requests the gateway never sees, with any path and any
    // identity header: the gateway speaks HTTP/2 to clients itself instead.
    if t == "h2c" || t.starts_with("h2c/") {
        return Err(
            "\"h2c\" cannot be tunnelled: requests inside it would bypass the gateway".into(),
        );
    }
    Ok(t)
}

/// A size: an integer of bytes, or a string of digits with a unit: `B`, SI `KB`/`MB`/`GB`
/// (powers of 1000) or binary `KiB`/`MiB`/`GiB` (powers of 1024), case-insensitive.
fn parse_byte_size(v: &toml::Value) -> Result<u64, String> {
    const HINT: &str = "write bytes as an integer or a string such as \"10MB\" or \"512KiB\"";
    let s = match v {
        toml::Value::Integer(n) => {
            return u64::try_from(*n).map_err(|_| format!("{n} is negative; {HINT}"))
        }
        toml::Value::String(s) => s.trim(),
        other => return Err(format!("{} is not a size; {HINT}", other.type_str())),
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = (&s[..split], s[split..].trim());
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; {HINT}")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("{s:?} is not a size; {HINT}"))
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    // A bare address means that one host.
    s.parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{s:?} is not a CIDR such as \"10.0.0.0/8\" or an IP address"))
}

/// `https://h5.example.com[:port]` → normalized origin without trailing slash.
fn parse_origin(s: &str) -> Result<String, String> {
    let url = url::Url::parse(s.trim()).map_err(|e| format!("{s:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{s:?} must start with https:// or http://"));
    }
    if url.host_str().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{s:?} must be an origin such as \"https://h5.example.com\""
        ));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{s:?} must be an origin only, without a path, query or fragment"
        ));
    }
    Ok(url.origin().ascii_serialization())
}

/// A WeChat base URL: http(s), no query; returned without trailing slash.
fn base_url(s: &str) -> Result<String, String> {
    let url = url::Url::parse(s.trim()).map_err(|e| format!("{s:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{s:?} must be an http:// or https:// URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{s:?} must not have a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

fn parse_upstream(s: &str) -> Result<Upstream, String> {
    let url = url::Url::parse(s.trim()).map_err(|e| format!("{s:?} is not a URL ({e})"))?;
    let https = match url.scheme() {
        "http" => false,
        "https" => true,
        other => {
            return Err(format!(
                "scheme {other:?} is not supported; use http:// or https://"
            ))
        }
    };
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!(
            "{s:?} must not have credentials, a query or a fragment"
        ));
    }
    let host = url.host_str().ok_or_else(|| format!("{s:?} has no host"))?;
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let authority = authority
        .parse::<http::uri::Authority>()
        .map_err(|e| format!("{s:?}: bad host ({e})"))?;
    Ok(Upstream {
        url: s.trim().to_string(),
        https,
        authority,
        base_path: url.path().trim_end_matches('/').to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Settings, ConfigError> {
        let env = |name: &str| match name {
            "SECRET" => Some("s3cr3t".to_string()),
            "SESSION" => Some("0123456789abcdef0123456789abcdef".to_string()),
            _ => None,
        };
        Settings::from_toml(text, Path::new("gw.toml"), Path::new("."), &env)
    }

    const MIN: &str = "[server]\nlisten = \"127.0.0.1:0\"\n[[route]]\nname = \"a\"\nupstream = \"http://127.0.0.1:3000\"\n";

    #[test]
    fn minimal_config_has_defaults() {
        let s = load(MIN).unwrap();
        assert_eq!(s.server.request_timeout, Duration::from_secs(30));
        assert_eq!(s.server.max_request_header_bytes, 16384);
        assert_eq!(s.routes[0].path, "/");
        assert_eq!(s.routes[0].auth, AuthMode::Off, "no [wechat]: plain proxy");
        assert_eq!(s.routes[0].upstream.base_path, "");
    }

    #[test]
    fn workers_and_keepalive_timeout() {
        let s = load(MIN).unwrap();
        assert_eq!(s.server.keepalive_timeout, Duration::from_secs(30));
        assert_eq!(s.server.upstream_idle_timeout, Duration::from_secs(60));
        assert_eq!(s.server.workers, default_workers());
        assert!(s.server.workers >= 1);
        let with = |extra: &str| load(&MIN.replace("[server]", &format!("[server]\n{extra}")));
        let s = with("workers = 3\nkeepalive_timeout = \"75s\"").unwrap();
        assert_eq!(s.server.workers, 3);
        assert_eq!(s.server.keepalive_timeout, Duration::from_secs(75));
        assert_eq!(
            with("workers = \"auto\"").unwrap().server.workers,
            default_workers()
        );
        for bad in [
            "workers = 0",
            "workers = -1",
            "workers = 257",
            "workers = \"many\"",
            "workers = 1.5",
            "workers = [2]",
        ] {
            let e = with(bad).unwrap_err();
            assert_eq!(e.key, "server.workers", "{bad}: {e}");
            assert!(e.reason.contains("\"auto\""), "{bad}: {e}");
        }
        let e = with("keepalive_timeout = \"0s\"").unwrap_err();
        assert_eq!(e.key, "server.keepalive_timeout");
    }

    #[test]
    fn env_expansion_and_missing_var() {
        let text = MIN.replace("name = \"a\"", "name = \"${SECRET}-x\"");
        assert_eq!(load(&text).unwrap().routes[0].name, "s3cr3t-x");
        let text = MIN.replace("name = \"a\"", "name = \"${NOPE}\"");
        let e = load(&text).unwrap_err();
        assert_eq!(e.key, "route[0].name");
        assert!(e.reason.contains("NOPE is not set"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = load(&MIN.replace("listen", "lisen = \"x\"\nlisten")).unwrap_err();
        // serde_path_to_error names the unknown key itself, under its table.
        assert_eq!(e.key, "server.lisen");
        assert!(e.reason.contains("unknown field `lisen`"), "{e}");
        assert!(!e.to_string().contains('\n'), "one line: {e:?}");
        let e = load(&format!("{MIN}colour = \"red\"\n")).unwrap_err();
        assert!(e.reason.contains("colour"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                MIN.replace("[server]", "[server]\nrequest_timeout = \"soon\""),
                "server.request_timeout",
            ),
            (
                MIN.replace("[server]", "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]"),
                "server.trusted_proxies[0]",
            ),
            (MIN.replace("127.0.0.1:0", "localhost"), "server.listen"),
            (
                MIN.replace("http://127.0.0.1:3000", "ftp://x"),
                "route[0].upstream",
            ),
            (
                MIN.replace("[server]", "[server]\npublic_url = \"https://a.com/x\""),
                "server.public_url",
            ),
            (
                format!("{MIN}[[route]]\nname = \"a\"\npath = \"/b\"\nupstream = \"http://x\"\n"),
                "route[1].name",
            ),
            (
                format!("{MIN}[[route]]\nname = \"b\"\nupstream = \"http://x\"\n"),
                "route[1].path",
            ),
            (
                MIN.replace("name = \"a\"", "name = \"a\"\npath = \"/_wxgate/x\""),
                "route[0].path",
            ),
        ];
        for (text, key) in cases {
            let e = load(&text).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.to_string().starts_with("gw.toml: "), "{e}");
        }
    }

    #[test]
    fn auth_routes_need_wechat_session_and_jwt() {
        let text = MIN.replace("name = \"a\"", "name = \"a\"\nauth = \"required\"");
        let e = load(&text).unwrap_err();
        assert_eq!(e.key, "route[0].auth");
        let text = format!(
            "{MIN}[wechat]\nappid = \"wx0123456789abcdef\"\nsecret = \"${{SECRET}}\"\n[session]\nsecret = \"${{SESSION}}\"\n[jwt]\nalgorithm = \"HS256\"\nsecret = \"${{SESSION}}\"\n"
        );
        let s = load(&text).unwrap();
        assert_eq!(
            s.routes[0].auth,
            AuthMode::Required,
            "fail closed when WeChat is configured"
        );
        assert_eq!(s.wechat.as_ref().unwrap().secret.expose(), b"s3cr3t");
        assert!(
            !format!("{:?}", s.wechat).contains("s3cr3t"),
            "Debug must not print secrets"
        );
    }

    #[test]
    fn warnings_for_what_wechat_refuses() {
        let base = format!(
            "{MIN}[wechat]\nappid = \"wx0123456789abcdef\"\nsecret = \"x\"\n[session]\nsecret = \"${{SESSION}}\"\n[jwt]\nalgorithm = \"HS256\"\nsecret = \"${{SESSION}}\"\n"
        );
        let s = load(&base.replace(
            "[server]",
            "[server]\npublic_url = \"http://h5.example.com:8443\"",
        ))
        .unwrap();
        let w = s.warnings().join("\n");
        assert!(w.contains("10003") && w.contains("plain HTTP"), "{w}");
        let s = load(&base.replace(
            "[server]",
            "[server]\npublic_url = \"https://h5.example.com\"",
        ))
        .unwrap();
        assert!(s.warnings().is_empty());
        assert!(
            load(MIN).unwrap().warnings().is_empty(),
            "no auth, nothing to warn about"
        );
    }

    #[test]
    fn short_session_secret_is_refused() {
        let text = format!("{MIN}[session]\nsecret = \"short\"\n");
        let e = load(&text).unwrap_err();
        assert_eq!(e.key, "session.secret");
        let text = format!("{MIN}[session]\nsecret = [\"${{SESSION}}\", \"short\"]\n");
        assert_eq!(load(&text).unwrap_err().key, "session.secret[1]");
    }

    #[test]
    fn route_body_upgrade_and_preflight_defaults() {
        let s = load(MIN).unwrap();
        let r = &s.routes[0];
        assert_eq!(r.upgrades, ["websocket"]);
        assert_eq!(r.max_body, None, "unlimited by default");
        assert_eq!(r.preflight, Preflight::Auth, "not an api route");
        let api = load(&MIN.replace("name = \"a\"", "name = \"a\"\napi = true")).unwrap();
        assert_eq!(api.routes[0].preflight, Preflight::Pass);
    }

    #[test]
    fn route_body_upgrade_and_preflight_values() {
        let with =
            |extra: &str| load(&MIN.replace("name = \"a\"", &format!("name = \"a\"\n{extra}")));
        let r = |extra: &str| with(extra).unwrap().routes[0].clone();
        assert_eq!(
            r("upgrades = [\"WebSocket\", \" x-custom/2 \"]").upgrades,
            ["websocket", "x-custom/2"]
        );
        assert!(r("upgrades = []").upgrades.is_empty());
        for (text, bytes) in [
            ("1024", 1024),
            ("0", 0),
            ("\"10MB\"", 10_000_000),
            ("\"10 mb\"", 10_000_000),
            ("\"512KiB\"", 512 * 1024),
            ("\"2GiB\"", 2 << 30),
            ("\"3kb\"", 3000),
            ("\"77\"", 77),
            ("\"77B\"", 77),
        ] {
            assert_eq!(
                r(&format!("max_body = {text}")).max_body,
                Some(bytes),
                "{text}"
            );
        }
        assert_eq!(
            r("api = true\npreflight = \"auth\"").preflight,
            Preflight::Auth
        );
        assert_eq!(
            r("api = true\npreflight = \"pass\"").preflight,
            Preflight::Pass
        );
    }

    #[test]
    fn route_body_upgrade_and_preflight_errors_name_their_key() {
        let with =
            |extra: &str| load(&MIN.replace("name = \"a\"", &format!("name = \"a\"\n{extra}")));
        for (extra, key, why) in [
            ("max_body = -1", "route[0].max_body", "negative"),
            (
                "max_body = \"10 parsecs\"",
                "route[0].max_body",
                "unknown unit",
            ),
            ("max_body = \"MB\"", "route[0].max_body", "not a size"),
            ("max_body = \"1.5MB\"", "route[0].max_body", "unknown unit"),
            (
                "max_body = \"99999999999GiB\"",
                "route[0].max_body",
                "not a size",
            ),
            ("max_body = true", "route[0].max_body", "not a size"),
            (
                "upgrades = [\"websocket\", \"h2c\"]",
                "route[0].upgrades[1]",
                "h2c",
            ),
            ("upgrades = [\"H2C\"]", "route[0].upgrades[0]", "h2c"),
            (
                "upgrades = [\"web socket\"]",
                "route[0].upgrades[0]",
                "not an Upgrade",
            ),
            (
                "upgrades = [\"\"]",
                "route[0].upgrades[0]",
                "not an Upgrade",
            ),
            ("upgrades = \"websocket\"", "route[0].upgrades", "sequence"),
            (
                "api = true\npreflight = \"allow\"",
                "route[0].preflight",
                "not one of",
            ),
            ("preflight = \"pass\"", "route[0].preflight", "api = true"),
        ] {
            let e = with(extra).unwrap_err();
            assert_eq!(e.key, key, "{extra}: {e}");
            assert!(e.reason.contains(why), "{extra}: {e}");
        }
    }

    #[test]
    fn session_cookie_name_must_not_be_another_gateway_cookie() {
        for bad in [
            "wxgate_state",
            "wxgate_guard",
            "wxgate_snapshot",
            "wxgate_state_x",
        ] {
            let text =
                format!("{MIN}[session]\nsecret = \"${{SESSION}}\"\ncookie_name = \"{bad}\"\n");
            let e = load(&text).unwrap_err();
            assert_eq!(e.key, "session.cookie_name", "{bad}");
            assert!(e.reason.contains("other cookies"), "{e}");
        }
        let text = format!("{MIN}[session]\nsecret = \"${{SESSION}}\"\ncookie_name = \"sid\"\n");
        assert_eq!(load(&text).unwrap().session.unwrap().cookie_name, "sid");
    }

    #[test]
    fn session_cache_bounds() {
        let base = format!("{MIN}[session]\nsecret = \"${{SESSION}}\"\n");
        let s = load(&base).unwrap().session.unwrap();
        assert_eq!((s.cache_max_entries, s.cache_max_bytes), (10_000, 32 << 20));
        let s = load(&format!(
            "{base}cache_max_entries = 500\ncache_max_bytes = \"8 MB\"\n"
        ))
        .unwrap()
        .session
        .unwrap();
        assert_eq!((s.cache_max_entries, s.cache_max_bytes), (500, 8 << 20));
        for (extra, key) in [
            ("cache_max_entries = 0", "session.cache_max_entries"),
            ("cache_max_bytes = \"32XB\"", "session.cache_max_bytes"),
            ("cache_max_bytes = \"1KB\"", "session.cache_max_bytes"),
            (
                "cache_max_bytes = \"99999999999GB\"",
                "session.cache_max_bytes",
            ),
        ] {
            let e = load(&format!("{base}{extra}\n")).unwrap_err();
            assert_eq!(e.key, key, "{extra}: {e}");
        }
        assert_eq!(parse_cache_size("4096"), Some(4096));
        assert_eq!(parse_cache_size("1gb"), Some(1 << 30));
        assert_eq!(parse_cache_size("MB"), None);
        assert_eq!(parse_cache_size("-1MB"), None);
    }

    #[test]
    fn upstream_base_path() {
        let u = parse_upstream("https://api.example.com:8443/app/").unwrap();
        assert!(u.https);
        assert_eq!(u.authority.as_str(), "api.example.com:8443");
        assert_eq!(u.base_path, "/app");
    }
}
