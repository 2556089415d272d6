//! The server-to-server half of WeChat web authorization: the code → openid exchange
//! (never retried), `cgi-bin/user/info` for followers' unionids, and the one global access
//! token per appid, cached and refreshed by a single caller however many wait for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::config::{Secret, TokenEndpoint, WechatSettings};

/// What a failed WeChat call looked like. Never carries the secret, a code or a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WechatError {
    #[error("WeChat errcode {errcode}: {errmsg}")]
    Api { errcode: i64, errmsg: String },
    #[error("WeChat did not answer in time")]
    Timeout,
    #[error("WeChat unreachable: {0}")]
    Transport(String),
    #[error("WeChat answered something unexpected: {0}")]
    BadResponse(String),
}

impl WechatError {
    pub fn errcode(&self) -> Option<i64> {
        match self {
            WechatError::Api { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }

    /// Errors that mean the gateway's own configuration is wrong (appid, secret, IP whitelist):
    /// retrying cannot help and an operator must act.
    pub fn is_config(&self) -> bool {
        matches!(
            self.errcode(),
            Some(40013 | 40125 | 40164 | 61004 | 40243 | 40002)
        )
    }

    /// The code was bad, expired, already used or missing: the browser may retry the flow.
    pub fn is_bad_code(&self) -> bool {
        matches!(self.errcode(), Some(40029 | 40163 | 41008 | 42003))
    }
}

/// The useful part of a code exchange. The access and refresh tokens are dropped at parse
/// time: the gateway never stores or forwards them.
#[derive(Debug, Clone)]
pub struct CodeExchange {
    pub openid: String,
    pub unionid: Option<String>,
    pub scope: String,
    pub is_snapshot: bool,
}

#[derive(Deserialize)]
struct ErrorFields {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

#[derive(Deserialize)]
struct ExchangeBody {
    openid: String,
    #[serde(default)]
    scope: String,
    unionid: Option<String>,
    #[serde(default)]
    is_snapshotuser: i64,
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct UserInfoBody {
    #[serde(default)]
    subscribe: i64,
    unionid: Option<String>,
}

struct CachedToken {
    token: Arc<str>,
    refresh_after: Instant,
}

/// The global token and how the last fetch went, behind one lock.
#[derive(Default)]
struct TokenSlot {
    cached: Option<CachedToken>,
    /// The error of the last fetch, if it failed: shared with everyone who waited for it.
    last_error: Option<WechatError>,
}

pub struct WechatClient {
    http: reqwest::Client,
    api_base: String,
    appid: String,
    secret: Secret,
    endpoint: TokenEndpoint,
    /// Held while fetching, so concurrent callers wait for the one fetch (single-flight).
    token: Mutex<TokenSlot>,
    /// Fetches started so far: a caller that sees it move while waiting for the lock knows a
    /// fetch ran meanwhile, and takes its outcome instead of starting another one.
    fetches: AtomicU64,
}

impl WechatClient {
    pub fn new(settings: &WechatSettings) -> Result<WechatClient, String> {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("wxgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the WeChat HTTP client: {e}"))?;
        Ok(WechatClient {
            http,
            api_base: settings.api_base.clone(),
            appid: settings.appid.clone(),
            secret: settings.secret.clone(),
            endpoint: settings.token_endpoint,
            token: Mutex::new(TokenSlot::default()),
            fetches: AtomicU64::new(0),
        })
    }

    fn secret(&self) -> &str {
        std::str::from_utf8(self.secret.expose()).unwrap_or("")
    }

    /// `sns/oauth2/access_token`. Called once per code: a code is single-use, so a retry
    /// could only ever produce 40163.
    pub async fn exchange_code(&self, code: &str) -> Result<CodeExchange, WechatError> {
        let url = format!("{}/sns/oauth2/access_token", self.api_base);
        let req = self.http.get(url).query(&[
            ("appid", self.appid.as_str()),
            ("secret", self.secret()),
            ("code", code),
            ("grant_type", "authorization_code"),
        ]);
        let body: ExchangeBody = send(req).await?;
        Ok(CodeExchange {
            openid: body.openid,
            unionid: body.unionid.filter(|u| !u.is_empty()),
            scope: body.scope,
            is_snapshot: body.is_snapshotuser == 1,
        })
    }

    /// The unionid of a follower via `cgi-bin/user/info`; `None` for non-followers.
    pub async fn follower_unionid(&self, openid: &str) -> Result<Option<String>, WechatError> {
        let token = self.global_token(None).await?;
        match self.user_info(&token, openid).await {
            // Stale or expired global token: fetch a new one once and retry once.
            Err(e) if matches!(e.errcode(), Some(40001 | 40014 | 42001)) => {
                let token = self.global_token(Some(&token)).await?;
                self.user_info(&token, openid).await
            }
            other => other,
        }
    }

    async fn user_info(&self, token: &str, openid: &str) -> Result<Option<String>, WechatError> {
        let url = format!("{}/cgi-bin/user/info", self.api_base);
        let info: UserInfoBody = retry_system_errors(|| {
            send(self.http.get(&url).query(&[
                ("access_token", token),
                ("openid", openid),
                ("lang", "zh_CN"),
            ]))
        })
        .await?;
        // subscribe = 0: not a follower, and WeChat sends nothing else.
        Ok(info
            .unionid
            .filter(|u| info.subscribe == 1 && !u.is_empty()))
    }

    /// The cached global token. `stale` names a token WeChat refused: it is replaced only if it
    /// is still the cached one, so a crowd of callers that saw it fail causes one fetch.
    /// Callers that waited while a fetch failed get that failure rather than queueing a fetch
    /// (and a timeout) each.
    pub async fn global_token(&self, stale: Option<&Arc<str>>) -> Result<Arc<str>, WechatError> {
        let seen = self.fetches.load(Ordering::Acquire);
        let mut slot = self.token.lock().await;
        if let Some(c) = slot.cached.as_ref() {
            let refused = stale.is_some_and(|s| Arc::ptr_eq(s, &c.token));
            if !refused && Instant::now() < c.refresh_after {
                return Ok(c.token.clone());
            }
        }
        if self.fetches.load(Ordering::Acquire) != seen {
            if let Some(e) = &slot.last_error {
                return Err(e.clone());
            }
        }
        self.fetches.fetch_add(1, Ordering::AcqRel);
        let fresh = match retry_system_errors(|| self.fetch_token()).await {
            Ok(fresh) => fresh,
            Err(e) => {
                slot.last_error = Some(e.clone());
                return Err(e);
            }
        };
        // Refresh ahead of expiry: WeChat renews stable tokens 5 minutes early, so do we.
        let lifetime = Duration::from_secs(fresh.expires_in.saturating_sub(300).max(60));
        let token: Arc<str> = Arc::from(fresh.access_token);
        slot.cached = Some(CachedToken {
            token: token.clone(),
            refresh_after: Instant::now() + lifetime,
        });
        slot.last_error = None;
        Ok(token)
    }

    async fn fetch_token(&self) -> Result<TokenBody, WechatError> {
        let req = match self.endpoint {
            TokenEndpoint::Stable => self
                .http
                .post(format!("{}/cgi-bin/stable_token", self.api_base))
                .json(&serde_json::json!({
                    "grant_type": "client_credential",
                    "appid": self.appid,
                    "secret": self.secret(),
                    "force_refresh": false,
                })),
            TokenEndpoint::Classic => self
                .http
                .get(format!("{}/cgi-bin/token", self.api_base))
                .query(&[
                    ("grant_type", "client_credential"),
                    ("appid", self.appid.as_str()),
                    ("secret", self.secret()),
                ]),
        };
        send(req).await
    }
}

/// `-1 system error` on an idempotent call: two more tries with a short backoff.
async fn retry_system_errors<T, F, Fut>(mut call: F) -> Result<T, WechatError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, WechatError>>,
{
    let mut delay = Duration::from_millis(100);
    for _ in 0..2 {
        match call().await {
            Err(e) if e.errcode() == Some(-1) => {
                tokio::time::sleep(delay).await;
                delay *= 3;
            }
            other => return other,
        }
    }
    call().await
}

/// Sends a request and parses WeChat's answer: always JSON (whatever the content type says;
/// `sns/*` answers text/plain), an error whenever `errcode` is present and not 0.
async fn send<T: serde::de::DeserializeOwned>(
    req: reqwest::RequestBuilder,
) -> Result<T, WechatError> {
    // reqwest errors print the URL, which may hold the secret or a code: strip it.
    let resp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            WechatError::Timeout
        } else {
            WechatError::Transport(e.without_url().to_string())
        }
    })?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| {
        if e.is_timeout() {
            WechatError::Timeout
        } else {
            WechatError::Transport(e.without_url().to_string())
        }
    })?;
    if !status.is_success() {
        return Err(WechatError::Transport(format!("HTTP {status}")));
    }
    if let Ok(err) = serde_json::from_slice::<ErrorFields>(&bytes) {
        if err.errcode != 0 {
            return Err(WechatError::Api {
                errcode: err.errcode,
                errmsg: err.errmsg.chars().take(200).collect(),
            });
        }
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| WechatError::BadResponse(format!("{e} ({} bytes)", bytes.len())))
}
