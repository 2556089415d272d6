//! Authentication decisions. A request reaches an upstream only with a [`Permit`], and only
//! this module makes permits: the proxy cannot forward a request nobody decided about.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;

use crate::body::Body;
use crate::config::{AuthMode, ConfigError, RouteSettings, Settings};
use crate::error::GatewayError;
use crate::headers::{self, ClientView};

/// The identity headers of one authenticated session, prepared once and reused.
pub struct IdentityHeaders {
    openid: HeaderValue,
    unionid: Option<HeaderValue>,
    jwt: HeaderValue,
    jwt_header: HeaderName,
}

/// Permission to forward, carrying what the upstream may learn about the user.
pub struct Permit {
    identity: Option<Arc<IdentityHeaders>>,
    snapshot: bool,
}

impl Permit {
    fn anonymous() -> Permit {
        Permit {
            identity: None,
            snapshot: false,
        }
    }

    /// Writes the gateway-made identity headers; the proxy has already stripped any
    /// client-sent ones, so these are the only identity headers the upstream sees.
    pub(crate) fn write_headers(&self, h: &mut HeaderMap) {
        if let Some(id) = &self.identity {
            h.insert(headers::X_WECHAT_OPENID.clone(), id.openid.clone());
            if let Some(u) = &id.unionid {
                h.insert(headers::X_WECHAT_UNIONID.clone(), u.clone());
            }
            h.insert(id.jwt_header.clone(), id.jwt.clone());
        }
        if self.snapshot {
            h.insert(headers::X_WECHAT_SNAPSHOT.clone(), HeaderValue::from_static("1"));
        }
    }
}

pub enum Decision {
    Forward(Permit),
    Respond(Response<Body>),
}

/// The login machinery, present when `[wechat]` is configured.
pub struct Auth {
    jwt_header: HeaderName,
    cookie_names: Vec<&'static str>,
}

impl Auth {
    pub fn from_settings(settings: &Settings) -> Result<Option<Auth>, ConfigError> {
        let _ = settings;
        Ok(None)
    }

    pub fn jwt_header(&self) -> &HeaderName {
        &self.jwt_header
    }

    pub fn cookie_names(&self) -> &[&str] {
        &self.cookie_names
    }

    pub async fn serve_endpoint(&self, name: &str, req: &Request<Incoming>, view: &ClientView) -> Result<Option<Response<Body>>, GatewayError> {
        let _ = (name, req, view);
        Ok(None)
    }
}

/// Decides whether and as whom a request goes upstream.
pub async fn authenticate(auth: Option<&Auth>, route: &RouteSettings, req: &Request<Incoming>, view: &ClientView) -> Result<Decision, GatewayError> {
    let _ = (req, view);
    match (auth, route.auth) {
        (_, AuthMode::Off) | (None, _) => Ok(Decision::Forward(Permit::anonymous())),
        (Some(_), _) => Ok(Decision::Forward(Permit::anonymous())),
    }
}
