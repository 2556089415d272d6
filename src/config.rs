//! `gateway.toml`: the raw serde shape (`deny_unknown_fields` everywhere) and its validation
//! into typed [`Settings`]. Every error names the file, the dotted key and the reason, and a
//! file is checked whole: [`ConfigErrors`] lists every error found, one per line. The binary
//! turns them into exit status 78 (EX_CONFIG); a reload that finds any keeps the old settings.
//! Secrets may be read from files ([`SecretSource`]); [`restart_required`] says which changed
//! keys a reload cannot apply.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::de::DeserializeOwned;
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

/// Every error found in a file, in file order (sections, then routes); never empty. `Display`
/// writes one line per error (a TOML syntax error keeps toml's own lines with the caret under
/// the position). Derefs to a slice: `errors.len()`, `errors[0].key`, `errors.iter()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    /// `None` for an empty list: there is no such thing as an empty `ConfigErrors`.
    pub fn new(errors: Vec<ConfigError>) -> Option<ConfigErrors> {
        (!errors.is_empty()).then_some(ConfigErrors(errors))
    }

    pub fn into_vec(self) -> Vec<ConfigError> {
        self.0
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl std::ops::Deref for ConfigErrors {
    type Target = [ConfigError];
    fn deref(&self) -> &[ConfigError] {
        &self.0
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

// ---------------------------------------------------------------------------------------------
// Secrets: inline or from a file.
// ---------------------------------------------------------------------------------------------

/// Where a secret comes from: written inline (normally `"${ENV_NAME}"`) or
/// `{ file = "/run/secrets/name" }`, read at every load (so again on every reload) with the
/// trailing newline trimmed; a relative path is relative to the config file's directory.
/// Any secret key can use it (`wechat.secret`, `session.secret`, `jwt.secret`; later
/// `redis.url`): give the raw struct a `SecretSource` field and call `Validator::secret`.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    Inline(String),
    /// The path as written (`${NAME}` already expanded), before resolving against the file's
    /// directory.
    File(String),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Inline(s) => write!(f, "Inline(<{} bytes redacted>)", s.len()),
            SecretSource::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

const SECRET_EXPECTED: &str = "a string or { file = \"path\" }";

/// Reads `{ file = "..." }` from a map (also used inside `session.secret`'s list).
fn secret_from_map<'de, A: serde::de::MapAccess<'de>>(
    mut map: A,
) -> Result<SecretSource, A::Error> {
    use serde::de::Error;
    let mut file = None;
    while let Some(key) = map.next_key::<String>()? {
        if key != "file" || file.is_some() {
            return Err(A::Error::unknown_field(&key, &["file"]));
        }
        file = Some(map.next_value::<String>()?);
    }
    match file {
        Some(f) if !f.trim().is_empty() => Ok(SecretSource::File(f)),
        Some(_) => Err(A::Error::custom("file must not be empty")),
        None => Err(A::Error::missing_field("file")),
    }
}

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SecretSource;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(SECRET_EXPECTED)
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<SecretSource, E> {
                Ok(SecretSource::Inline(s.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<SecretSource, A::Error> {
                secret_from_map(map)
            }
        }
        d.deserialize_any(V)
    }
}

/// `session.secret`: one secret, or a list of them for rotation (current first).
#[derive(Debug)]
enum OneOrMany {
    One(SecretSource),
    Many(Vec<SecretSource>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "{SECRET_EXPECTED}, or a list of them")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(SecretSource::Inline(s.to_string())))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<OneOrMany, A::Error> {
                secret_from_map(map).map(OneOrMany::One)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut all = Vec::new();
                while let Some(s) = seq.next_element::<SecretSource>()? {
                    all.push(s);
                }
                Ok(OneOrMany::Many(all))
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads a secret file: UTF-8 text, the trailing newline (as `echo` and most editors write
/// it) trimmed. Errors name the path, never the content.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text =
        String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    let text = text.trim_end_matches(['\n', '\r']);
    if text.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(text.to_string())
}

// ---------------------------------------------------------------------------------------------
// Raw shape, exactly as written in gateway.toml. Each section is deserialized on its own (and
// each route), so an error in one never hides the errors in another.
// ---------------------------------------------------------------------------------------------

/// The top-level sections, in the order they are checked.
const SECTIONS: [&str; 7] = [
    "server", "wechat", "session", "jwt", "log", "admin", "route",
];

#[derive(Debug, Default)]
struct RawConfig {
    /// `None` when absent or unreadable (the error is already reported).
    server: Option<RawServer>,
    wechat: Option<RawWechat>,
    session: Option<RawSession>,
    jwt: Option<RawJwt>,
    log: Option<RawLog>,
    admin: Option<RawAdmin>,
    /// One per `[[route]]`, `None` for a route that could not be read.
    route: Vec<Option<RawRoute>>,
    /// Sections written in the file, readable or not: an unreadable `[wechat]` must not also
    /// produce "authentication needs a [wechat] section" or change the routes' default auth.
    present: HashSet<&'static str>,
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
    secret: SecretSource,
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
#[serde(deny_unknown_fields)]
struct RawSession {
    secret: OneOrMany,
    ttl: Option<String>,
    cookie_name: Option<String>,
    cache_max_entries: Option<u64>,
    cache_max_bytes: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    header: Option<String>,
    algorithm: Option<String>,
    private_key: Option<String>,
    secret: Option<SecretSource>,
    issuer: Option<String>,
    audience: Option<String>,
    ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
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
    pub log: LogSettings,
    pub admin: AdminSettings,
    pub routes: Vec<RouteSettings>,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// `EnvFilter` directives, validated; `WXGATE_LOG` overrides them (see [`crate::logfilter`]).
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: crate::logfilter::DEFAULT.to_string(),
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminSettings {
    /// An optional second listener for /metrics, /healthz and /readyz (issue #12).
    pub listen: Option<SocketAddr>,
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

#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Reads and validates a file, and every file it names (keys, certificates, secret files),
    /// so a reload calls this again. Relative paths inside it are resolved against the file's
    /// directory, so `wxgate -c /etc/wxgate/gateway.toml` works from anywhere.
    pub fn load(path: &Path) -> Result<Settings, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: String::new(),
            reason: format!("cannot read: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, path, base, &|name| std::env::var(name).ok())
    }

    /// Parses TOML text. `env` looks up `${NAME}` references (injected for tests). Every
    /// section and every route is checked even after an error, so the result lists them all.
    pub fn from_toml(
        text: &str,
        file: &Path,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigErrors> {
        let v = Validator {
            file,
            base_dir,
            errors: RefCell::default(),
        };
        let mut table: toml::Table = match toml::from_str(text) {
            Ok(t) => t,
            // A syntax error ends the reading: nothing after it is known. toml's message has the
            // line, the column and a caret under the position; its lines are kept as they are.
            Err(e) => return Err(v.err("", e.to_string().trim_end()).into()),
        };
        for (key, value) in table.iter_mut() {
            expand_env(value, &mut key.clone(), env, &|k, r| v.report(k, r));
        }
        let raw = v.raw(table);
        let settings = v.settings(raw);
        let mut errors = v.errors.into_inner();
        // Reading finds type errors before validation finds bad values: list them by section
        // and route instead, as they appear in a file written in the documented order.
        errors.sort_by_key(|e| key_rank(&e.key));
        match (settings, ConfigErrors::new(errors)) {
            (_, Some(errors)) => Err(errors),
            (Some(settings), None) => Ok(settings),
            // Every `None` above comes with a reported error; this keeps that a promise.
            (None, None) => Err(ConfigError {
                file: file.to_path_buf(),
                key: String::new(),
                reason: "invalid configuration".to_string(),
            }
            .into()),
        }
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

/// Replaces `${NAME}` in every string value; an unset variable is reported naming the key
/// (`path`) and the value is left as written (later errors on that key are not reported).
fn expand_env(
    value: &mut toml::Value,
    path: &mut String,
    env: &dyn Fn(&str) -> Option<String>,
    report: &dyn Fn(&str, String),
) {
    match value {
        toml::Value::String(s) if s.contains("${") => match expand_str(s, env) {
            Ok(expanded) => *s = expanded,
            Err(reason) => report(path, reason),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                expand_env(item, path, env, report);
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
                expand_env(v, path, env, report);
                path.truncate(len);
            }
        }
        _ => {}
    }
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

/// Validates the raw sections into [`Settings`], collecting every error: each check reports
/// and goes on, and a part that failed is `None` (so `?` on it only after all checks ran).
struct Validator<'a> {
    file: &'a Path,
    base_dir: &'a Path,
    errors: RefCell<Vec<ConfigError>>,
}

impl Validator<'_> {
    fn err(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// Records an error, unless `key` (or a key under it) already has one: one cause, one
    /// line (an unset `${VAR}` in `session.secret` is not also "shorter than 32 bytes").
    fn report(&self, key: &str, reason: impl Into<String>) {
        let mut errors = self.errors.borrow_mut();
        let covered = errors.iter().any(|e| {
            e.key == key
                || (!key.is_empty()
                    && e.key.starts_with(key)
                    && matches!(e.key.as_bytes().get(key.len()), Some(b'.' | b'[')))
        });
        if !covered {
            errors.push(self.err(key, reason));
        }
    }

    fn ok<T>(&self, key: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|reason| self.report(key, reason)).ok()
    }

    /// An optional value: `Some(None)` when absent, `None` when present and invalid.
    fn opt<T, U>(
        &self,
        key: &str,
        value: Option<T>,
        parse: impl FnOnce(T) -> Result<U, String>,
    ) -> Option<Option<U>> {
        match value {
            None => Some(None),
            Some(v) => self.ok(key, parse(v)).map(Some),
        }
    }

    fn duration(&self, key: &str, v: Option<&str>, default: Duration) -> Option<Duration> {
        match v {
            None => Some(default),
            Some(s) => self.ok(key, parse_duration(s)),
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

    /// The text of a secret, read from its file if it names one. Errors name the key and the
    /// path, never the content.
    fn secret(&self, key: &str, source: SecretSource) -> Option<String> {
        match source {
            SecretSource::Inline(s) => Some(s),
            SecretSource::File(p) => self.ok(key, read_secret_file(&self.path(&p))),
        }
    }

    // -- Reading the sections ------------------------------------------------------------

    /// Splits the file into its sections and deserializes each on its own.
    fn raw(&self, mut table: toml::Table) -> RawConfig {
        let mut raw = RawConfig::default();
        for key in table.keys() {
            match SECTIONS.iter().find(|s| **s == key) {
                Some(s) => {
                    raw.present.insert(s);
                }
                None => {
                    let expected: Vec<String> = SECTIONS.iter().map(|s| format!("`{s}`")).collect();
                    self.report(
                        key,
                        format!(
                            "unknown field `{key}`, expected one of {}",
                            expected.join(", ")
                        ),
                    );
                }
            }
        }
        raw.server = match table.remove("server") {
            Some(v) => self.section("server", v),
            None => {
                self.report("server", "the [server] section is required");
                None
            }
        };
        raw.wechat = table
            .remove("wechat")
            .and_then(|v| self.section("wechat", v));
        raw.session = table
            .remove("session")
            .and_then(|v| self.section("session", v));
        raw.jwt = table.remove("jwt").and_then(|v| self.section("jwt", v));
        raw.log = table.remove("log").and_then(|v| self.section("log", v));
        raw.admin = table.remove("admin").and_then(|v| self.section("admin", v));
        match table.remove("route") {
            None => {}
            Some(toml::Value::Array(items)) => {
                for (i, item) in items.into_iter().enumerate() {
                    raw.route.push(self.section(&format!("route[{i}]"), item));
                }
            }
            Some(other) => self.report(
                "route",
                format!(
                    "must be a list of tables, written [[route]], not a {}",
                    other.type_str()
                ),
            ),
        }
        raw
    }

    /// Deserializes one section (`prefix` is its key, e.g. `server` or `route[2]`). serde
    /// stops at the first error, so each error is reported and the key at fault removed, and
    /// the section read again to find the next one.
    fn section<T: DeserializeOwned>(&self, prefix: &str, mut value: toml::Value) -> Option<T> {
        if !value.is_table() {
            self.report(
                prefix,
                format!("must be a table, not a {}", value.type_str()),
            );
            return None;
        }
        // Each pass removes a key, so this ends; the bound is only a guard.
        for _ in 0..256 {
            let e = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
                Ok(t) => return Some(t),
                Err(e) => e,
            };
            let mut at: Vec<String> = Vec::new();
            let mut key = prefix.to_string();
            let mut removable = true;
            for segment in e.path().iter() {
                match segment {
                    serde_path_to_error::Segment::Map { key: k } => {
                        key.push('.');
                        key.push_str(k);
                        if removable {
                            at.push(k.clone());
                        }
                    }
                    serde_path_to_error::Segment::Seq { index } => {
                        key.push_str(&format!("[{index}]"));
                        removable = false;
                    }
                    _ => removable = false,
                }
            }
            let reason = clean_reason(&e.into_inner().to_string());
            if let Some(field) = missing_field(&reason) {
                // Remove the table lacking it (if it is not the section itself) and go on. A
                // missing key after another error in the same table is most likely that
                // error (a misspelt key): say nothing more.
                let table = key.clone();
                key.push('.');
                key.push_str(field);
                let other_error_here = self
                    .errors
                    .borrow()
                    .iter()
                    .any(|e| e.key.starts_with(&format!("{table}.")));
                if !other_error_here {
                    self.report(&key, "is required");
                }
            } else {
                self.report(&key, reason);
            }
            if at.is_empty() || !remove_at(&mut value, &at) {
                return None;
            }
        }
        None
    }

    // -- Validating ------------------------------------------------------------------------

    fn settings(&self, raw: RawConfig) -> Option<Settings> {
        let server = raw.server.and_then(|s| self.server(s));
        let wechat = raw.wechat.and_then(|w| self.wechat(w));
        let session = raw.session.and_then(|s| self.session(s));
        let jwt = raw.jwt.and_then(|j| self.jwt(j));
        let log = match raw.log {
            None => Some(LogSettings::default()),
            Some(l) => self.log(l),
        };
        let admin = match raw.admin {
            None => Some(AdminSettings::default()),
            Some(a) => self.admin(a, server.as_ref()),
        };
        // Whether the sections are written, not whether they are valid: an invalid [wechat]
        // must neither change the routes' default auth nor produce "needs a [wechat]".
        let has = |s: &str| raw.present.contains(s);
        if raw.route.is_empty() {
            self.report("route", "at least one [[route]] is required");
        }
        let mut routes: Vec<(usize, RouteSettings)> = Vec::with_capacity(raw.route.len());
        let mut names = HashSet::new();
        let mut places = HashSet::new();
        for (i, r) in raw.route.into_iter().enumerate() {
            let Some(route) = r.and_then(|r| self.route(i, r, has("wechat"))) else {
                continue;
            };
            if !names.insert(route.name.clone()) {
                self.report(
                    &format!("route[{i}].name"),
                    format!("duplicate route name {:?}", route.name),
                );
            } else if !places.insert((route.host.clone(), route.path.clone())) {
                self.report(
                    &format!("route[{i}].path"),
                    format!(
                        "duplicate route: another route already serves host {} with path prefix {:?}",
                        route.host.as_deref().unwrap_or("(any)"),
                        route.path
                    ),
                );
            }
            routes.push((i, route));
        }
        if let Some((i, _)) = routes.iter().find(|(_, r)| r.auth != AuthMode::Off) {
            let key = format!("route[{i}].auth");
            if !has("wechat") {
                self.report(&key, "authentication needs a [wechat] section");
            } else if !has("session") {
                self.report(
                    &key,
                    "authentication needs a [session] section with a secret",
                );
            } else if !has("jwt") {
                self.report(&key, "authentication needs a [jwt] section");
            }
        }
        Some(Settings {
            source: self.file.to_path_buf(),
            server: server?,
            wechat,
            session,
            jwt,
            log: log?,
            admin: admin?,
            routes: routes.into_iter().map(|(_, r)| r).collect(),
        })
    }

    fn server(&self, s: RawServer) -> Option<ServerSettings> {
        let listen = self.ok("server.listen", parse_listen(&s.listen));
        let public_url = self.opt("server.public_url", s.public_url, |u| parse_origin(&u));
        let mut trusted_proxies = Some(Vec::new());
        for (i, cidr) in s.trusted_proxies.iter().enumerate() {
            let net = self.ok(&format!("server.trusted_proxies[{i}]"), parse_cidr(cidr));
            match (net, trusted_proxies.as_mut()) {
                (Some(net), Some(list)) => list.push(net),
                _ => trusted_proxies = None,
            }
        }
        let request_timeout = self.duration(
            "server.request_timeout",
            s.request_timeout.as_deref(),
            Duration::from_secs(30),
        );
        let shutdown_timeout = self.duration(
            "server.shutdown_timeout",
            s.shutdown_timeout.as_deref(),
            Duration::from_secs(30),
        );
        let keepalive_timeout = self.duration(
            "server.keepalive_timeout",
            s.keepalive_timeout.as_deref(),
            Duration::from_secs(30),
        );
        let upstream_idle_timeout = self.duration(
            "server.upstream_idle_timeout",
            s.upstream_idle_timeout.as_deref(),
            Duration::from_secs(60),
        );
        let workers = self.ok("server.workers", parse_workers(s.workers));
        let max_request_header_bytes = match s.max_request_header_bytes {
            None => Some(16 * 1024),
            Some(n) if (1024..=1024 * 1024).contains(&n) => Some(n as usize),
            Some(n) => {
                self.report(
                    "server.max_request_header_bytes",
                    format!("{n} is out of range (1024 to 1048576)"),
                );
                None
            }
        };
        let tls = s.tls.map(|t| TlsSettings {
            cert: self.path(&t.cert),
            key: self.path(&t.key),
        });
        let upstream_ca = match s.upstream_ca {
            None => Some(Vec::new()),
            Some(p) => {
                let path = self.path(&p);
                let certs = crate::tls::load_certs(&path)
                    .and_then(|certs| crate::tls::upstream_client_config(&certs).map(|_| certs));
                self.ok("server.upstream_ca", certs)
            }
        };
        Some(ServerSettings {
            listen: listen?,
            public_url: public_url?,
            trusted_proxies: trusted_proxies?,
            request_timeout: request_timeout?,
            shutdown_timeout: shutdown_timeout?,
            keepalive_timeout: keepalive_timeout?,
            upstream_idle_timeout: upstream_idle_timeout?,
            workers: workers?,
            max_request_header_bytes: max_request_header_bytes?,
            upstream_ca: upstream_ca?,
            tls,
        })
    }

    fn wechat(&self, w: RawWechat) -> Option<WechatSettings> {
        let appid = w.appid.trim().to_string();
        let appid_ok = !appid.is_empty()
            && appid.len() <= 64
            && appid.chars().all(|c| c.is_ascii_alphanumeric());
        if !appid_ok {
            self.report("wechat.appid", "must be the Official Account's appid (letters and digits, e.g. \"wx0123456789abcdef\")");
        }
        let secret = self.secret("wechat.secret", w.secret).and_then(|s| {
            let s = s.trim();
            if s.is_empty() {
                self.report(
                    "wechat.secret",
                    "must not be empty (use \"${WECHAT_APPSECRET}\" or { file = \"...\" })",
                );
                return None;
            }
            Some(Secret::new(s.as_bytes().to_vec()))
        });
        let api_base = self.ok(
            "wechat.api_base",
            base_url(w.api_base.as_deref().unwrap_or("https://api.weixin.qq.com")),
        );
        let open_base = self.ok(
            "wechat.open_base",
            base_url(
                w.open_base
                    .as_deref()
                    .unwrap_or("https://open.weixin.qq.com"),
            ),
        );
        let unionid = match w.unionid.as_deref().unwrap_or("off") {
            "off" => Some(UnionIdMode::Off),
            "follower" => Some(UnionIdMode::Follower),
            other => {
                self.report(
                    "wechat.unionid",
                    format!("{other:?} is not one of \"off\", \"follower\""),
                );
                None
            }
        };
        let token_endpoint = match w.token_endpoint.as_deref().unwrap_or("stable") {
            "stable" => Some(TokenEndpoint::Stable),
            "classic" => Some(TokenEndpoint::Classic),
            other => {
                self.report(
                    "wechat.token_endpoint",
                    format!("{other:?} is not one of \"stable\", \"classic\""),
                );
                None
            }
        };
        let timeout = self.duration(
            "wechat.timeout",
            w.timeout.as_deref(),
            Duration::from_secs(5),
        );
        let mut files_ok = true;
        for name in w.verify_files.keys() {
            // Served at the root, so the name must be a plain file name WeChat would ask for.
            let ok = name.ends_with(".txt")
                && name.len() <= 128
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
                && !name.starts_with('.');
            if !ok {
                files_ok = false;
                self.report(
                    &format!("wechat.verify_files.{name}"),
                    "must be a plain file name ending in .txt, such as \"MP_verify_abc123.txt\"",
                );
            }
        }
        if !appid_ok || !files_ok {
            return None;
        }
        Some(WechatSettings {
            appid,
            secret: secret?,
            api_base: api_base?,
            open_base: open_base?,
            unionid: unionid?,
            token_endpoint: token_endpoint?,
            allow_wecom: w.allow_wecom.unwrap_or(false),
            timeout: timeout?,
            verify_files: w.verify_files,
        })
    }

    fn session(&self, s: RawSession) -> Option<SessionSettings> {
        let sources: Vec<(String, SecretSource)> = match s.secret {
            OneOrMany::One(k) => vec![("session.secret".to_string(), k)],
            OneOrMany::Many(ks) => ks
                .into_iter()
                .enumerate()
                .map(|(i, k)| (format!("session.secret[{i}]"), k))
                .collect(),
        };
        let mut keys = Some(Vec::new());
        if sources.is_empty() {
            self.report("session.secret", "needs at least one key");
            keys = None;
        }
        for (key, source) in sources {
            let bytes = self
                .secret(&key, source)
                .and_then(|text| self.ok(&key, parse_secret(&text)));
            match (bytes, keys.as_mut()) {
                (Some(b), Some(list)) => list.push(Secret::new(b)),
                _ => keys = None,
            }
        }
        let ttl = self.duration(
            "session.ttl",
            s.ttl.as_deref(),
            Duration::from_secs(7 * 86400),
        );
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
            self.report(
                "session.cookie_name",
                "must be letters, digits, '_' or '-' and must not start with \"__\" (\"__Host-\" is added on HTTPS)",
            );
            return None;
        }
        // The gateway's other cookies (login state, loop guard, snapshot mark): the same name
        // would mix two cookies, and each cookie's name is its seal's associated data.
        if ["wxgate_state", "wxgate_guard", "wxgate_snapshot"].contains(&cookie_name.as_str())
            || cookie_name.starts_with("wxgate_state_")
        {
            self.report(
                "session.cookie_name",
                "is the name of one of the gateway's other cookies (wxgate_state, wxgate_state_*, wxgate_guard, wxgate_snapshot)",
            );
            return None;
        }
        let cache_max_entries = match s.cache_max_entries {
            None => Some(10_000),
            Some(n @ 1..=10_000_000) => Some(n as usize),
            Some(n) => {
                self.report(
                    "session.cache_max_entries",
                    format!("{n} is out of range: 1 to 10000000"),
                );
                None
            }
        };
        let cache_max_bytes =
            self.opt(
                "session.cache_max_bytes",
                s.cache_max_bytes,
                |v| match parse_byte_size(&v)? {
                    n @ 65_536..=17_179_869_184 => Ok(n as usize),
                    n => Err(format!("{n} bytes is out of range: \"64KiB\" to \"16GiB\"")),
                },
            );
        Some(SessionSettings {
            keys: keys?,
            ttl: ttl?,
            cookie_name,
            cache_max_entries: cache_max_entries?,
            cache_max_bytes: cache_max_bytes?.unwrap_or(32 << 20),
        })
    }

    fn jwt(&self, j: RawJwt) -> Option<JwtSettings> {
        let header_name = j.header.unwrap_or_else(|| "X-WeChat-JWT".to_string());
        let header = self.ok(
            "jwt.header",
            http::HeaderName::from_bytes(header_name.as_bytes())
                .map_err(|_| format!("{header_name:?} is not a valid header name")),
        );
        let algorithm: Option<JwtAlgorithm> = self.ok(
            "jwt.algorithm",
            j.algorithm.as_deref().unwrap_or("ES256").parse(),
        );
        let key = algorithm.and_then(|alg| self.jwt_key(alg, j.private_key, j.secret));
        let issuer = j.issuer.unwrap_or_else(|| "wxgate".to_string());
        if issuer.is_empty() {
            self.report("jwt.issuer", "must not be empty");
        }
        let audience = j.audience.unwrap_or_else(|| "upstream".to_string());
        if audience.is_empty() {
            self.report("jwt.audience", "must not be empty");
        }
        let ttl = self
            .duration("jwt.ttl", j.ttl.as_deref(), Duration::from_secs(300))
            .filter(|ttl| {
                let ok = *ttl >= Duration::from_secs(30);
                if !ok {
                    self.report(
                        "jwt.ttl",
                        "must be at least 30s (tokens are reused until near expiry)",
                    );
                }
                ok
            });
        if issuer.is_empty() || audience.is_empty() {
            return None;
        }
        Some(JwtSettings {
            header: header?,
            algorithm: algorithm?,
            key: key?,
            issuer,
            audience,
            ttl: ttl?,
        })
    }

    fn jwt_key(
        &self,
        algorithm: JwtAlgorithm,
        private_key: Option<String>,
        secret: Option<SecretSource>,
    ) -> Option<JwtKey> {
        match (algorithm, private_key, secret) {
            (JwtAlgorithm::HS256, None, Some(secret)) => {
                let text = self.secret("jwt.secret", secret)?;
                let bytes = self.ok("jwt.secret", parse_secret(&text))?;
                Some(JwtKey::Shared(Secret::new(bytes)))
            }
            (JwtAlgorithm::HS256, _, None) => {
                self.report("jwt.secret", "HS256 needs a secret");
                None
            }
            (JwtAlgorithm::HS256, Some(_), Some(_)) => {
                self.report(
                    "jwt.private_key",
                    "HS256 uses jwt.secret; remove jwt.private_key",
                );
                None
            }
            (_, Some(_), Some(_)) => {
                self.report(
                    "jwt.secret",
                    format!(
                        "{} uses jwt.private_key; remove jwt.secret",
                        algorithm.as_str()
                    ),
                );
                None
            }
            (_, None, _) => {
                self.report(
                    "jwt.private_key",
                    format!(
                        "{} needs a PEM private key file (see certs/README.md)",
                        algorithm.as_str()
                    ),
                );
                None
            }
            (_, Some(p), None) => {
                let path = self.path(&p);
                let pem = self.ok(
                    "jwt.private_key",
                    std::fs::read(&path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display())),
                )?;
                Some(JwtKey::Pem {
                    path,
                    pem: Secret::new(pem),
                })
            }
        }
    }

    fn log(&self, l: RawLog) -> Option<LogSettings> {
        let level = l
            .level
            .unwrap_or_else(|| crate::logfilter::DEFAULT.to_string());
        self.ok("log.level", crate::logfilter::parse(&level).map(|_| ()))?;
        Some(LogSettings { level })
    }

    fn admin(&self, a: RawAdmin, server: Option<&ServerSettings>) -> Option<AdminSettings> {
        let listen = self.opt("admin.listen", a.listen, |l| parse_listen(&l))?;
        if let (Some(admin), Some(server)) = (listen, server) {
            // Port 0 asks for any free port, so two of them never collide.
            if admin == server.listen && admin.port() != 0 {
                self.report(
                    "admin.listen",
                    format!("{admin} is server.listen; the admin listener needs its own address"),
                );
                return None;
            }
        }
        Some(AdminSettings { listen })
    }

    fn route(&self, i: usize, r: RawRoute, has_wechat: bool) -> Option<RouteSettings> {
        let key = |k: &str| format!("route[{i}].{k}");
        let name = r.name.trim().to_string();
        if name.is_empty() {
            self.report(&key("name"), "must not be empty");
        }
        let host = match r.host {
            None => Some(None),
            Some(h) => {
                let h = h.trim().to_ascii_lowercase();
                let ok = !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
                if ok {
                    Some(Some(h))
                } else {
                    self.report(
                        &key("host"),
                        format!("{h:?} is not a host name (no scheme, port or path)"),
                    );
                    None
                }
            }
        };
        let path = r.path.unwrap_or_else(|| "/".to_string());
        let path_ok = if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
            self.report(
                &key("path"),
                format!("{path:?} must be a path prefix starting with '/'"),
            );
            false
        } else if path == "/_wxgate" || path.starts_with("/_wxgate/") {
            self.report(&key("path"), "/_wxgate/ is reserved for the gateway");
            false
        } else {
            true
        };
        let upstream = self.ok(&key("upstream"), parse_upstream(&r.upstream));
        // Fail closed: with WeChat configured, a route authenticates unless it says otherwise.
        let default_auth = if has_wechat { "required" } else { "off" };
        let auth = match r.auth.as_deref().unwrap_or(default_auth) {
            "required" => Some(AuthMode::Required),
            "optional" => Some(AuthMode::Optional),
            "off" => Some(AuthMode::Off),
            other => {
                self.report(
                    &key("auth"),
                    format!("{other:?} is not one of \"required\", \"optional\", \"off\""),
                );
                None
            }
        };
        let non_wechat = match r.non_wechat.as_deref().unwrap_or("deny") {
            "deny" => Some(NonWechat::Deny),
            "pass" => Some(NonWechat::Pass),
            "login" => Some(NonWechat::Login),
            other => {
                self.report(
                    &key("non_wechat"),
                    format!("{other:?} is not one of \"deny\", \"pass\", \"login\""),
                );
                None
            }
        };
        let api = r.api.unwrap_or(false);
        let upgrades = match r.upgrades {
            None => Some(vec!["websocket".to_string()]),
            Some(list) => {
                let mut out = Some(Vec::with_capacity(list.len()));
                for (j, t) in list.into_iter().enumerate() {
                    match (
                        self.ok(&key(&format!("upgrades[{j}]")), parse_upgrade_token(&t)),
                        out.as_mut(),
                    ) {
                        (Some(t), Some(v)) => v.push(t),
                        _ => out = None,
                    }
                }
                out
            }
        };
        let max_body = self.opt(&key("max_body"), r.max_body, |v| parse_byte_size(&v));
        let preflight = match r.preflight.as_deref() {
            None | Some("pass") if api => Some(Preflight::Pass),
            None => Some(Preflight::Auth),
            Some("auth") if api => Some(Preflight::Auth),
            Some(other @ ("pass" | "auth")) => {
                self.report(
                    &key("preflight"),
                    format!("{other:?} applies only to api = true routes"),
                );
                None
            }
            Some(other) => {
                self.report(
                    &key("preflight"),
                    format!("{other:?} is not one of \"pass\", \"auth\""),
                );
                None
            }
        };
        if name.is_empty() || !path_ok {
            return None;
        }
        Some(RouteSettings {
            name,
            host: host?,
            path,
            upstream: upstream?,
            auth: auth?,
            non_wechat: non_wechat?,
            api,
            upgrades: upgrades?,
            max_body: max_body?,
            preflight: preflight?,
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

/// toml appends "in `table`" lines to its messages; the key already says where, and the
/// error must stay on one line. serde's "expected struct RawTls" means "expected a table".
fn clean_reason(reason: &str) -> String {
    let lines: Vec<&str> = reason
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("in `"))
        .collect();
    let mut reason = lines.join(" ");
    if let Some(i) = reason.find("expected struct Raw") {
        reason.truncate(i);
        reason.push_str("expected a table");
    }
    reason
}

/// Where a key sorts: unknown top-level keys first, then the sections in [`SECTIONS`] order,
/// routes by index.
fn key_rank(key: &str) -> (usize, usize) {
    let end = key.find(['.', '[']).unwrap_or(key.len());
    let section = SECTIONS
        .iter()
        .position(|s| *s == &key[..end])
        .map_or(0, |i| i + 1);
    let index = key[end..]
        .strip_prefix('[')
        .and_then(|rest| rest.split(']').next())
        .and_then(|i| i.parse().ok())
        .unwrap_or(0);
    (section, index)
}

/// serde's "missing field `listen`" → `listen`.
fn missing_field(reason: &str) -> Option<&str> {
    reason
        .strip_prefix("missing field `")?
        .split('`')
        .next()
        .filter(|f| !f.is_empty())
}

/// Removes the value at `path` (table keys from the section's root); false if absent.
fn remove_at(value: &mut toml::Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut here = value;
    for k in parents {
        match here.get_mut(k.as_str()) {
            Some(v) => here = v,
            None => return false,
        }
    }
    here.as_table_mut()
        .is_some_and(|t| t.remove(last.as_str()).is_some())
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("invalid address {s:?}; expected ip:port such as \"127.0.0.1:8080\""))
}

fn parse_workers(v: Option<toml::Value>) -> Result<usize, String> {
    match v {
        None => Ok(default_workers()),
        Some(toml::Value::String(n)) if n == "auto" => Ok(default_workers()),
        Some(toml::Value::Integer(n)) if (1..=MAX_WORKERS as i64).contains(&n) => Ok(n as usize),
        Some(_) => Err(format!(
            "must be \"auto\" or a number from 1 to {MAX_WORKERS}"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Reloading.
// ---------------------------------------------------------------------------------------------

/// Keys a reload cannot apply: the listening sockets, the worker threads, and what the
/// server and the upstream pools were built with at start-up (those outlive a reload).
/// Everything else, including the certificate and key files of `[server.tls]` and every
/// secret file, is re-read and applied by a reload.
pub const RESTART_KEYS: [&str; 8] = [
    "server.listen",
    "server.workers",
    "server.tls",
    "server.keepalive_timeout",
    "server.max_request_header_bytes",
    "server.upstream_ca",
    "server.upstream_idle_timeout",
    "admin.listen",
];

/// The keys of [`RESTART_KEYS`] whose value differs between the running settings and a
/// reloaded file, in that order. For `server.tls`, only turning TLS on or off counts: new
/// certificate or key files (or new paths) are applied by the reload.
pub fn restart_required(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let (o, n) = (&old.server, &new.server);
    let changed = [
        o.listen != n.listen,
        o.workers != n.workers,
        o.tls.is_some() != n.tls.is_some(),
        o.keepalive_timeout != n.keepalive_timeout,
        o.max_request_header_bytes != n.max_request_header_bytes,
        o.upstream_ca != n.upstream_ca,
        o.upstream_idle_timeout != n.upstream_idle_timeout,
        old.admin.listen != new.admin.listen,
    ];
    RESTART_KEYS
        .iter()
        .zip(changed)
        .filter_map(|(key, changed)| changed.then_some(*key))
        .collect()
}

/// For a reload: copies the running value of every key that needs a restart into `new`, so
/// the new settings describe what is really in force, and returns the keys that differed
/// (to be logged at WARN). Afterwards `restart_required(old, new)` is empty.
pub fn keep_restart_values(old: &Settings, new: &mut Settings) -> Vec<&'static str> {
    let changed = restart_required(old, new);
    let (o, n) = (&old.server, &mut new.server);
    for key in &changed {
        match *key {
            "server.listen" => n.listen = o.listen,
            "server.workers" => n.workers = o.workers,
            "server.tls" => n.tls = o.tls.clone(),
            "server.keepalive_timeout" => n.keepalive_timeout = o.keepalive_timeout,
            "server.max_request_header_bytes" => {
                n.max_request_header_bytes = o.max_request_header_bytes
            }
            "server.upstream_ca" => n.upstream_ca = o.upstream_ca.clone(),
            "server.upstream_idle_timeout" => n.upstream_idle_timeout = o.upstream_idle_timeout,
            "admin.listen" => new.admin.listen = old.admin.listen,
            _ => {}
        }
    }
    changed
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

    fn load_all(text: &str) -> Result<Settings, ConfigErrors> {
        let env = |name: &str| match name {
            "SECRET" => Some("s3cr3t".to_string()),
            "SESSION" => Some("0123456789abcdef0123456789abcdef".to_string()),
            _ => None,
        };
        Settings::from_toml(text, Path::new("gw.toml"), Path::new("."), &env)
    }

    /// For files with at most one error: that error.
    fn load(text: &str) -> Result<Settings, ConfigError> {
        load_all(text).map_err(|e| {
            assert_eq!(e.len(), 1, "exactly one error expected:\n{e}");
            e[0].clone()
        })
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

    const AUTH: &str = "[wechat]\nappid = \"wx0123456789abcdef\"\nsecret = \"${SECRET}\"\n[session]\nsecret = \"${SESSION}\"\n[jwt]\nalgorithm = \"HS256\"\nsecret = \"${SESSION}\"\n";

    fn keys(e: &ConfigErrors) -> Vec<&str> {
        e.iter().map(|e| e.key.as_str()).collect()
    }

    #[test]
    fn every_error_in_every_section_and_route_is_reported() {
        let text = "[server]\nlisten = \"nowhere\"\nlisen = 1\ncolour = 2\nrequest_timeout = 5\n\
                    [log]\nlevel = \"loud\"\n\
                    [admin]\nlisten = \"x\"\n\
                    [[route]]\nname = \"a\"\nupstream = \"ftp://x\"\n\
                    [[route]]\nname = \"b\"\npath = \"nope\"\nupstream = \"http://x\"\nauth = \"maybe\"\n\
                    [[route]]\nname = \"c\"\nextra = true\n";
        let e = load_all(text).unwrap_err();
        assert_eq!(
            keys(&e),
            [
                // serde meets a table's unknown keys in alphabetical order.
                "server.colour",
                "server.lisen",
                "server.request_timeout",
                "server.listen",
                "log.level",
                "admin.listen",
                "route[0].upstream",
                "route[1].path",
                "route[1].auth",
                "route[2].extra",
            ],
            "{e}"
        );
        assert!(e[2].reason.contains("invalid type: integer `5`"), "{e}");
        // One line per error, each naming the file.
        assert_eq!(e.to_string().lines().count(), e.len());
        assert!(e.to_string().lines().all(|l| l.starts_with("gw.toml: ")));
        // A misspelt required key is one error, not also "listen is required".
        let e = load_all(&MIN.replace("listen =", "lisen =")).unwrap_err();
        assert_eq!(keys(&e), ["server.lisen"], "{e}");
        // Required keys missing from a valid section are named as such.
        let e = load_all("[server]\n[[route]]\nname = \"a\"\n").unwrap_err();
        assert_eq!(keys(&e), ["server.listen", "route[0].upstream"], "{e}");
        assert!(e.iter().all(|e| e.reason == "is required"), "{e}");
        // Sections that are not tables, and a missing [server].
        let e = load_all("wechat = 1\nroute = \"x\"\n").unwrap_err();
        assert_eq!(keys(&e), ["server", "wechat", "route"], "{e}");
    }

    #[test]
    fn an_invalid_wechat_section_does_not_change_the_routes() {
        // [wechat] is written but invalid: no "needs a [wechat] section", and the route still
        // defaults to auth = "required" (which would be checked against it), not "off".
        let text = format!(
            "{MIN}{}",
            AUTH.replace("wx0123456789abcdef", "not an appid!")
        );
        let e = load_all(&text).unwrap_err();
        assert_eq!(keys(&e), ["wechat.appid"], "{e}");
        // An unset variable in a secret is that one error, not also "too short".
        let text = format!(
            "{MIN}{}",
            AUTH.replace("${SESSION}\"\n[jwt]", "${UNSET}\"\n[jwt]")
        );
        let e = load_all(&text).unwrap_err();
        assert_eq!(keys(&e), ["session.secret"], "{e}");
        assert!(e[0].reason.contains("UNSET is not set"), "{e}");
    }

    #[test]
    fn secrets_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, content: &[u8]| std::fs::write(dir.path().join(name), content);
        write("appsecret", b"app-secret-from-file\n").unwrap();
        write("session", b"0123456789abcdef0123456789abcdef\r\n").unwrap();
        write("old", b"fedcba9876543210fedcba9876543210").unwrap();
        write("jwt", b"jwt-secret-jwt-secret-jwt-secret-!!\n").unwrap();
        std::fs::create_dir(dir.path().join("abs")).unwrap();
        let abs = dir.path().join("abs/old");
        std::fs::rename(dir.path().join("old"), &abs).unwrap();
        let text = format!(
            "{MIN}[wechat]\nappid = \"wx0123456789abcdef\"\nsecret = {{ file = \"appsecret\" }}\n\
             [session]\nsecret = [{{ file = \"session\" }}, {{ file = \"{}\" }}, \"${{SESSION}}\"]\n\
             [jwt]\nalgorithm = \"HS256\"\nsecret = {{ file = \"jwt\" }}\n",
            abs.display()
        );
        let load_in = |text: &str| {
            let env = |n: &str| (n == "SESSION").then(|| "x".repeat(32));
            Settings::from_toml(text, &dir.path().join("gw.toml"), dir.path(), &env)
        };
        let s = load_in(&text).unwrap_or_else(|e| panic!("{e}"));
        // Relative to the config's directory, trailing newline trimmed.
        assert_eq!(
            s.wechat.as_ref().unwrap().secret.expose(),
            b"app-secret-from-file"
        );
        let session: Vec<&[u8]> = s
            .session
            .as_ref()
            .unwrap()
            .keys
            .iter()
            .map(|k| k.expose())
            .collect();
        assert_eq!(
            session,
            [
                b"0123456789abcdef0123456789abcdef".as_slice(),
                b"fedcba9876543210fedcba9876543210",
                "x".repeat(32).as_bytes(),
            ]
        );
        match &s.jwt.as_ref().unwrap().key {
            JwtKey::Shared(k) => assert_eq!(k.expose(), b"jwt-secret-jwt-secret-jwt-secret-!!"),
            other => panic!("{other:?}"),
        }
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("app-secret-from-file") && !debug.contains("0123456789abcdef0123"),
            "{debug}"
        );

        // Read at every load: a changed file gives the new secret.
        write("appsecret", b"rotated").unwrap();
        assert_eq!(
            load_in(&text).unwrap().wechat.unwrap().secret.expose(),
            b"rotated"
        );

        // Errors name the key and the path, never the content.
        write("short", b"too-short-secret\n").unwrap();
        write("empty", b"\n").unwrap();
        write("binary", b"\xff\xfe").unwrap();
        let bad = text
            .replace("\"appsecret\"", "\"missing\"")
            .replace("{ file = \"session\" }", "{ file = \"short\" }")
            .replace(&format!("\"{}\"", abs.display()), "\"empty\"")
            .replace("\"jwt\"", "\"binary\"");
        let e = load_in(&bad).unwrap_err();
        assert_eq!(
            keys(&e),
            [
                "wechat.secret",
                "session.secret[0]",
                "session.secret[1]",
                "jwt.secret"
            ],
            "{e}"
        );
        let missing = dir.path().join("missing");
        assert!(
            e[0].reason
                .contains(&format!("cannot read {}", missing.display())),
            "{e}"
        );
        assert!(
            e[1].reason.contains("at least 32 bytes")
                && !e.to_string().contains("too-short-secret"),
            "{e}"
        );
        assert!(e[2].reason.ends_with("empty is empty"), "{e}");
        assert!(e[3].reason.ends_with("binary is not UTF-8 text"), "{e}");
        // A table that is not { file = "..." }.
        let e = load_in(&text.replace("{ file = \"jwt\" }", "{ path = \"jwt\" }")).unwrap_err();
        assert_eq!(keys(&e), ["jwt.secret"], "{e}");
        assert!(
            e[0].reason
                .contains("unknown field `path`, expected `file`"),
            "{e}"
        );
    }

    #[test]
    fn secret_source_debug_hides_inline_secrets() {
        let inline = SecretSource::Inline("hunter2-hunter2".into());
        assert_eq!(format!("{inline:?}"), "Inline(<15 bytes redacted>)");
        let file = SecretSource::File("/run/secrets/x".into());
        assert_eq!(format!("{file:?}"), "File(\"/run/secrets/x\")");
    }

    #[test]
    fn log_level_and_admin_listen() {
        let s = load(MIN).unwrap();
        assert_eq!(s.log.level, "info");
        assert_eq!(s.admin.listen, None);
        let s = load(&format!(
            "{MIN}[log]\nlevel = \"warn,wxgate=debug\"\n[admin]\nlisten = \"127.0.0.1:9091\"\n"
        ))
        .unwrap();
        assert_eq!(s.log.level, "warn,wxgate=debug");
        assert_eq!(s.admin.listen, Some("127.0.0.1:9091".parse().unwrap()));
        for bad in ["verbose", "wxgate=loud"] {
            let e = load(&format!("{MIN}[log]\nlevel = \"{bad}\"\n")).unwrap_err();
            assert_eq!(e.key, "log.level", "{e}");
        }
        let e = load(&format!("{MIN}[admin]\nlisten = \"localhost\"\n")).unwrap_err();
        assert_eq!(e.key, "admin.listen", "{e}");
        let same = MIN.replace("127.0.0.1:0", "127.0.0.1:8080");
        let e = load(&format!("{same}[admin]\nlisten = \"127.0.0.1:8080\"\n")).unwrap_err();
        assert_eq!(e.key, "admin.listen", "{e}");
        assert!(e.reason.contains("its own address"), "{e}");
    }

    #[test]
    fn restart_required_names_what_a_reload_cannot_apply() {
        let base = format!("{MIN}{AUTH}");
        let old = load(&base).unwrap();
        assert!(restart_required(&old, &load(&base).unwrap()).is_empty());
        // Live: routes, secrets, timeouts read per request, the log level.
        let live = base
            .replace(
                "[server]",
                "[server]\nrequest_timeout = \"5s\"\nshutdown_timeout = \"1s\"",
            )
            .replace("http://127.0.0.1:3000", "http://127.0.0.1:4000")
            .replace("[wechat]", "[log]\nlevel = \"debug\"\n[wechat]");
        assert!(restart_required(&old, &load(&live).unwrap()).is_empty());
        let fixed = tls_section(&base, "c.pem")
            .replace("127.0.0.1:0", "127.0.0.1:1")
            .replace(
                "[server]",
                "[server]\nworkers = 77\nkeepalive_timeout = \"9s\"\nmax_request_header_bytes = 2048\nupstream_idle_timeout = \"1s\"",
            )
            .replace("[wechat]", "[admin]\nlisten = \"127.0.0.1:9091\"\n[wechat]");
        let mut new = load(&fixed).unwrap();
        let mut expected: Vec<&str> = RESTART_KEYS.to_vec();
        expected.retain(|k| *k != "server.upstream_ca");
        assert_eq!(restart_required(&old, &new), expected);
        // Copying the running values back leaves nothing that needs a restart, and keeps the
        // rest of the new file.
        assert_eq!(keep_restart_values(&old, &mut new), expected);
        assert!(restart_required(&old, &new).is_empty());
        assert_eq!(new.server.listen, old.server.listen);
        assert!(new.server.tls.is_none());
        assert_eq!(new.admin.listen, None);
        // New certificate files (TLS stays on) reload; turning TLS off needs a restart.
        let tls_old = load(&tls_section(&base, "a.pem")).unwrap();
        assert!(
            restart_required(&tls_old, &load(&tls_section(&base, "b.pem")).unwrap()).is_empty()
        );
        assert_eq!(restart_required(&tls_old, &old), ["server.tls"]);
    }

    /// `text` with a `[server.tls]` table right after `[server]`'s keys.
    fn tls_section(text: &str, cert: &str) -> String {
        text.replacen(
            "\n[[route]]",
            &format!("\n[server.tls]\ncert = \"{cert}\"\nkey = \"k.pem\"\n[[route]]"),
            1,
        )
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
            "{base}cache_max_entries = 500\ncache_max_bytes = \"8MiB\"\n"
        ))
        .unwrap()
        .session
        .unwrap();
        assert_eq!((s.cache_max_entries, s.cache_max_bytes), (500, 8 << 20));
        for (extra, key) in [
            ("cache_max_entries = 0", "session.cache_max_entries"),
            ("cache_max_bytes = \"32XB\"", "session.cache_max_bytes"),
            ("cache_max_bytes = \"1KiB\"", "session.cache_max_bytes"),
            (
                "cache_max_bytes = \"99999999999GB\"",
                "session.cache_max_bytes",
            ),
        ] {
            let e = load(&format!("{base}{extra}\n")).unwrap_err();
            assert_eq!(e.key, key, "{extra}: {e}");
        }
        // One size syntax for every size key: SI and binary units as for route.max_body.
        let s = load(&format!("{base}cache_max_bytes = \"64KB\"\n"));
        assert!(s.is_err(), "64KB is 64000 bytes, below the 64KiB minimum");
        let s = load(&format!("{base}cache_max_bytes = \"8 MB\"\n")).unwrap();
        assert_eq!(s.session.unwrap().cache_max_bytes, 8_000_000);
        let s = load(&format!("{base}cache_max_bytes = 1048576\n")).unwrap();
        assert_eq!(s.session.unwrap().cache_max_bytes, 1 << 20);
    }

    #[test]
    fn upstream_base_path() {
        let u = parse_upstream("https://api.example.com:8443/app/").unwrap();
        assert!(u.https);
        assert_eq!(u.authority.as_str(), "api.example.com:8443");
        assert_eq!(u.base_path, "/app");
    }
}
