//! The `/_sim/` control API and the fault/counter machinery behind it: clock advance,
//! injected latency, errcode answers, HTTP 5xx and dropped connections for the next N calls,
//! per-endpoint call counters, and the "who is in the phone" picker.

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use super::http::{self, control_json, escape, page, redirect, set_cookie, Params, Resp};
use super::Sim;

/// How many calls a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FaultCount {
    /// The next N matching calls.
    Calls(u64),
    /// Every matching call until `DELETE /_sim/faults` (written `"until_cleared"`).
    UntilCleared(UntilCleared),
}

/// The literal `"until_cleared"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UntilCleared {
    UntilCleared,
}

impl Default for FaultCount {
    fn default() -> Self {
        FaultCount::Calls(1)
    }
}

/// What a fault does to a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Wait before answering (combines with the other kinds).
    Latency { ms: u64 },
    /// Answer HTTP 200 `{"errcode":N,"errmsg":…}` (WeChat's message unless `errmsg` given).
    Errcode {
        errcode: i64,
        #[serde(default)]
        errmsg: Option<String>,
    },
    /// Answer this HTTP status (e.g. 502) with a short text body.
    HttpStatus { status: u16 },
    /// Close the connection without answering.
    Drop,
}

/// One injected fault, as posted to `POST /_sim/faults`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Path such as `/sns/oauth2/access_token`, or `*` for every WeChat endpoint.
    pub endpoint: String,
    #[serde(flatten)]
    pub kind: FaultKind,
    #[serde(default)]
    pub count: FaultCount,
}

impl Fault {
    pub fn latency(endpoint: &str, ms: u64, count: FaultCount) -> Fault {
        Fault {
            endpoint: endpoint.into(),
            kind: FaultKind::Latency { ms },
            count,
        }
    }
    pub fn errcode(endpoint: &str, errcode: i64, calls: u64) -> Fault {
        Fault {
            endpoint: endpoint.into(),
            kind: FaultKind::Errcode {
                errcode,
                errmsg: None,
            },
            count: FaultCount::Calls(calls),
        }
    }
    pub fn http_status(endpoint: &str, status: u16, calls: u64) -> Fault {
        Fault {
            endpoint: endpoint.into(),
            kind: FaultKind::HttpStatus { status },
            count: FaultCount::Calls(calls),
        }
    }
    pub fn drop_connection(endpoint: &str, calls: u64) -> Fault {
        Fault {
            endpoint: endpoint.into(),
            kind: FaultKind::Drop,
            count: FaultCount::Calls(calls),
        }
    }

    fn matches(&self, path: &str) -> bool {
        self.endpoint == "*" || self.endpoint == path
    }

    /// Consumes one use; false when none is left.
    fn take(&mut self) -> bool {
        match &mut self.count {
            FaultCount::UntilCleared(_) => true,
            FaultCount::Calls(0) => false,
            FaultCount::Calls(n) => {
                *n -= 1;
                true
            }
        }
    }

    fn live(&self) -> bool {
        self.count != FaultCount::Calls(0)
    }

    fn validate(&self) -> Result<(), String> {
        if self.endpoint != "*" && !super::ENDPOINTS.contains(&self.endpoint.as_str()) {
            return Err(format!(
                "unknown endpoint {:?}; one of {:?} or \"*\"",
                self.endpoint,
                super::ENDPOINTS
            ));
        }
        if let FaultKind::HttpStatus { status } = self.kind {
            if !(400..=599).contains(&status) {
                return Err("http_status must be 400..=599".into());
            }
        }
        Ok(())
    }
}

/// What the faults decided for one call.
#[derive(Debug, Default)]
pub struct Decision {
    pub latency: Option<Duration>,
    pub outcome: Option<FaultKind>,
}

/// Faults and counters, behind one mutex so that counting and consuming a fault are a single
/// step: N concurrent calls against a count-N fault see exactly N faults.
#[derive(Debug, Default)]
pub struct Control {
    faults: Vec<Fault>,
    stats: BTreeMap<String, u64>,
}

impl Control {
    pub fn add(&mut self, f: Fault) {
        self.faults.push(f);
    }

    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    pub fn reset(&mut self) {
        self.faults.clear();
        self.stats.clear();
    }

    pub fn stats(&self) -> BTreeMap<String, u64> {
        self.stats.clone()
    }

    /// Counts a call to `path` and consumes the faults that apply to it: the first live
    /// latency fault and the first live answer-changing fault, in injection order.
    pub fn on_call(&mut self, path: &str) -> Decision {
        *self.stats.entry(path.to_string()).or_insert(0) += 1;
        let mut d = Decision::default();
        for f in self.faults.iter_mut().filter(|f| f.matches(path)) {
            match f.kind.clone() {
                FaultKind::Latency { ms } => {
                    if d.latency.is_none() && f.take() {
                        d.latency = Some(Duration::from_millis(ms));
                    }
                }
                other => {
                    if d.outcome.is_none() && f.take() {
                        d.outcome = Some(other);
                    }
                }
            }
        }
        self.faults.retain(Fault::live);
        d
    }
}

pub fn handle(sim: &Sim, method: &hyper::Method, path: &str, query: &Params, body: &[u8]) -> Resp {
    use hyper::Method;
    let bad = |m: String| control_json(StatusCode::BAD_REQUEST, &serde_json::json!({"error": m}));
    match (method, path) {
        (&Method::GET, "/_sim/stats") => control_json(
            StatusCode::OK,
            &http::stats_value(&sim.control.lock().map(|c| c.stats()).unwrap_or_default()),
        ),
        (&Method::GET, "/_sim/clock") => clock_value(sim),
        (&Method::POST, "/_sim/clock") => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Advance {
                advance_secs: u64,
            }
            match serde_json::from_slice::<Advance>(body) {
                Ok(a) => {
                    sim.clock.advance(Duration::from_secs(a.advance_secs));
                    clock_value(sim)
                }
                Err(e) => bad(format!("expected {{\"advance_secs\":N}}: {e}")),
            }
        }
        (&Method::GET, "/_sim/faults") => {
            let faults = sim
                .control
                .lock()
                .map(|c| c.faults.clone())
                .unwrap_or_default();
            control_json(
                StatusCode::OK,
                &serde_json::to_value(faults).unwrap_or_default(),
            )
        }
        (&Method::POST, "/_sim/faults") => match serde_json::from_slice::<Fault>(body) {
            Ok(f) => match f.validate() {
                Ok(()) => {
                    sim.inject(f);
                    control_json(StatusCode::OK, &serde_json::json!({"ok": true}))
                }
                Err(e) => bad(e),
            },
            Err(e) => bad(format!("bad fault: {e}")),
        },
        (&Method::DELETE, "/_sim/faults") => {
            if let Ok(mut c) = sim.control.lock() {
                c.clear_faults();
            }
            control_json(StatusCode::OK, &serde_json::json!({"ok": true}))
        }
        (&Method::POST, "/_sim/reset") => {
            sim.reset();
            control_json(StatusCode::OK, &serde_json::json!({"ok": true}))
        }
        (&Method::GET, "/_sim/world") => world_value(sim),
        (&Method::GET, "/_sim/users") => picker(sim, query.get("return").unwrap_or("")),
        (&Method::GET, "/_sim/users/select") => {
            let user = query.get("user").unwrap_or("");
            if sim.world.user(user).is_none() {
                return http::text(StatusCode::BAD_REQUEST, "unknown user");
            }
            let back = safe_return(query.get("return").unwrap_or(""));
            set_cookie(redirect(&back), "sim_user", user)
        }
        (&Method::GET, "/_sim/wechat") => {
            let back = safe_return(query.get("return").unwrap_or(""));
            set_cookie(redirect(&back), "sim_wechat", "1")
        }
        _ => http::text(StatusCode::NOT_FOUND, "unknown simulator control endpoint"),
    }
}

fn clock_value(sim: &Sim) -> Resp {
    control_json(
        StatusCode::OK,
        &serde_json::json!({"now": sim.clock.now_secs(), "now_ms": sim.clock.now_ms()}),
    )
}

fn world_value(sim: &Sim) -> Resp {
    let users: Vec<_> = sim
        .world
        .users
        .iter()
        .map(|u| {
            let ids: serde_json::Map<String, serde_json::Value> = sim
                .world
                .apps
                .iter()
                .map(|a| {
                    (
                        a.appid.clone(),
                        serde_json::json!({
                            "openid": sim.world.openid(&u.name, &a.appid),
                            "unionid": sim.world.unionid(&u.name, &a.appid),
                        }),
                    )
                })
                .collect();
            serde_json::json!({"name": u.name, "follows": u.follows, "snapshot": u.snapshot, "ids": ids})
        })
        .collect();
    let apps: Vec<_> = sim
        .world
        .apps
        .iter()
        .map(|a| {
            serde_json::json!({
                "appid": a.appid,
                "kind": match a.kind { super::AppKind::OfficialAccount => "official_account", super::AppKind::Website => "website" },
                "callback_domains": a.callback_domains,
                "open_platform": a.open_platform,
            })
        })
        .collect();
    control_json(
        StatusCode::OK,
        &serde_json::json!({"apps": apps, "users": users}),
    )
}

/// Only same-site targets (a path) or http(s) URLs; anything else goes to the index.
fn safe_return(r: &str) -> String {
    let ok = (r.starts_with('/') && !r.starts_with("//"))
        || r.starts_with("http://")
        || r.starts_with("https://");
    if ok {
        r.to_string()
    } else {
        "/".to_string()
    }
}

fn picker(sim: &Sim, back: &str) -> Resp {
    let mut items = String::new();
    for u in &sim.world.users {
        let follows = if u.follows.is_empty() {
            "follows nothing".to_string()
        } else {
            format!("follows {}", u.follows.join(", "))
        };
        let snap = if u.snapshot {
            ", snapshot-mode user"
        } else {
            ""
        };
        items.push_str(&format!(
            "<li><a class=\"btn\" href=\"/_sim/users/select?user={}&amp;return={}\">{}</a> <span class=\"code\">{}{}</span></li>",
            http::enc(&u.name),
            http::enc(back),
            escape(&u.name),
            escape(&follows),
            snap
        ));
    }
    page(
        "wxgate simulator: who is in the phone?",
        &format!(
            "<h2>Who is in the phone?</h2><p>wxgate simulator only: choose the WeChat user for this browser \
(sets the <code>sim_user</code> cookie).</p><ul>{items}</ul>"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_json_shapes() {
        let f: Fault = serde_json::from_str(
            r#"{"endpoint":"/sns/oauth2/access_token","kind":"latency","ms":6000,"count":1}"#,
        )
        .expect("latency");
        assert_eq!(f.kind, FaultKind::Latency { ms: 6000 });
        let f: Fault =
            serde_json::from_str(r#"{"endpoint":"*","kind":"drop","count":"until_cleared"}"#)
                .expect("drop");
        assert_eq!(
            f.count,
            FaultCount::UntilCleared(UntilCleared::UntilCleared)
        );
        let f: Fault =
            serde_json::from_str(r#"{"endpoint":"/cgi-bin/token","kind":"errcode","errcode":-1}"#)
                .expect("errcode");
        assert_eq!(f.count, FaultCount::Calls(1));
        assert!(serde_json::from_str::<Fault>(r#"{"endpoint":"*","kind":"nope"}"#).is_err());
    }

    #[test]
    fn faults_are_consumed_exactly() {
        let mut c = Control::default();
        c.add(Fault::errcode("/cgi-bin/token", -1, 2));
        c.add(Fault::latency("*", 5, FaultCount::Calls(1)));
        let d = c.on_call("/cgi-bin/token");
        assert!(d.latency.is_some() && d.outcome.is_some());
        let d = c.on_call("/sns/auth");
        assert!(d.latency.is_none() && d.outcome.is_none());
        assert!(c.on_call("/cgi-bin/token").outcome.is_some());
        assert!(c.on_call("/cgi-bin/token").outcome.is_none());
        assert_eq!(c.stats().get("/cgi-bin/token"), Some(&3));
        assert!(c.faults.is_empty());
    }

    #[test]
    fn return_targets_are_limited() {
        assert_eq!(safe_return("//evil.com"), "/");
        assert_eq!(safe_return("javascript:alert(1)"), "/");
        assert_eq!(safe_return("/connect/x?a=1"), "/connect/x?a=1");
    }
}
