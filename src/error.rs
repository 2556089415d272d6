//! The one error enum of the request path and the one place that turns an error into a
//! response: details go to the log, a short generic page (or JSON) goes to the client.

use http::StatusCode;

use crate::pages::{self, Body};

/// Everything that can stop a request before an upstream answers it.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("no route matches this host and path")]
    NoRoute,
    #[error("request headers are {0} bytes, over server.max_request_header_bytes")]
    HeadersTooLarge(usize),
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The client's request body was malformed or cut short (the client's fault, not the
    /// upstream's: never a 502).
    #[error("client request body failed: {0}")]
    ClientBody(String),
    /// The client stopped sending its request body for `server.request_timeout`.
    #[error("client request body stalled for {0:?}")]
    ClientTimeout(std::time::Duration),
    #[error("request body over the route's max_body of {0} bytes")]
    BodyTooLarge(u64),
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    #[error("upstream did not answer within {0:?}")]
    UpstreamTimeout(std::time::Duration),
    #[error("WeChat API unavailable: {0}")]
    WechatUnavailable(String),
    #[error("WeChat rejected the gateway's configuration: {0}")]
    WechatConfig(String),
    #[error("login could not be completed: {0}")]
    LoginFailed(&'static str),
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NoRoute => StatusCode::NOT_FOUND,
            GatewayError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::BadRequest(_)
            | GatewayError::ClientBody(_)
            | GatewayError::LoginFailed(_) => StatusCode::BAD_REQUEST,
            GatewayError::ClientTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            GatewayError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::UpstreamUnreachable(_) | GatewayError::WechatConfig(_) => {
                StatusCode::BAD_GATEWAY
            }
            GatewayError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::WechatUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code for JSON answers.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::NoRoute => "not_found",
            GatewayError::HeadersTooLarge(_) => "request_header_fields_too_large",
            GatewayError::BadRequest(_) | GatewayError::ClientBody(_) => "bad_request",
            GatewayError::ClientTimeout(_) => "request_timeout",
            GatewayError::BodyTooLarge(_) => "payload_too_large",
            GatewayError::UpstreamUnreachable(_) => "bad_gateway",
            GatewayError::UpstreamTimeout(_) => "gateway_timeout",
            GatewayError::WechatUnavailable(_) => "wechat_unavailable",
            GatewayError::WechatConfig(_) => "wechat_misconfigured",
            GatewayError::LoginFailed(_) => "login_failed",
            GatewayError::Internal(_) => "internal_error",
        }
    }

    /// What a person is told. Never the internal detail: that may name hosts or WeChat codes.
    fn public_message(&self) -> &'static str {
        match self {
            GatewayError::NoRoute => "There is nothing at this address.",
            GatewayError::HeadersTooLarge(_) => "The request headers are too large.",
            GatewayError::BadRequest(m) | GatewayError::LoginFailed(m) => m,
            GatewayError::ClientBody(_) => "The request body could not be read.",
            GatewayError::ClientTimeout(_) => "The request body was not sent in time.",
            GatewayError::BodyTooLarge(_) => "The request body is too large.",
            GatewayError::UpstreamUnreachable(_) => {
                "The application behind this gateway is not answering."
            }
            GatewayError::UpstreamTimeout(_) => {
                "The application behind this gateway took too long to answer."
            }
            GatewayError::WechatUnavailable(_) => {
                "WeChat login is temporarily unavailable. Please try again shortly."
            }
            GatewayError::WechatConfig(_) => "WeChat login is not set up correctly on this site.",
            GatewayError::Internal(_) => "Something went wrong on our side.",
        }
    }

    /// Logs the detail and renders the short answer.
    pub fn into_response(self, wants_json: bool, request_id: &str) -> http::Response<Body> {
        let status = self.status();
        match &self {
            GatewayError::WechatConfig(_) | GatewayError::Internal(_) => {
                tracing::error!(request_id, status = status.as_u16(), error = %self, "request failed")
            }
            // The client's own doing: at debug, so that no client can raise the gateway's
            // warnings (and the alerts fed by them).
            GatewayError::NoRoute
            | GatewayError::HeadersTooLarge(_)
            | GatewayError::BadRequest(_)
            | GatewayError::ClientBody(_)
            | GatewayError::ClientTimeout(_)
            | GatewayError::BodyTooLarge(_) => {
                tracing::debug!(request_id, status = status.as_u16(), error = %self, "request refused")
            }
            _ => {
                tracing::warn!(request_id, status = status.as_u16(), error = %self, "request failed")
            }
        }
        pages::error(
            status,
            self.code(),
            self.public_message(),
            wants_json,
            request_id,
        )
    }
}
