//! `wxgate demo`: the WeChat simulator, a demo upstream and the gateway on localhost, with
//! freshly generated session and JWT keys, so a newcomer sees the whole flow with no config,
//! no account and no network. The demo upstream shows what an upstream receives. Default
//! ports that are taken are replaced by free ones; ports the user chose are not.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::OnceCell;

use crate::app::Gateway;
use crate::auth::jwt::{generate_pem, Alg};
use crate::config::Settings;
use crate::pages::{escape, html_document};
use crate::simulator::{self, SimConfig, SimHandle};

/// Where the demo listens.
pub struct DemoOptions {
    pub listen: SocketAddr,
    pub sim_listen: SocketAddr,
}

/// The three running parts; dropping it removes the generated key directory.
pub struct Demo {
    pub gateway: crate::server::Running,
    pub simulator: SimHandle,
    pub upstream_addr: SocketAddr,
    scheme: &'static str,
    keys: KeyDir,
}

struct KeyDir(PathBuf);

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Demo {
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.gateway.local_addr())
    }

    pub async fn shutdown(self) {
        self.gateway.shutdown().await;
        self.simulator.shutdown();
        drop(self.keys);
    }
}

/// Starts the simulator, the demo upstream and the gateway.
pub async fn start(opts: DemoOptions) -> Result<Demo, String> {
    start_with(opts, None).await
}

/// Like [`start`], but with `tls = Some((cert, key))` (PEM files) the gateway serves HTTPS,
/// so its cookies become `__Host-` and `Secure`; the browser test uses it. The demo upstream
/// then trusts `cert` to fetch the JWKS, so the certificate must name 127.0.0.1.
pub async fn start_with(
    opts: DemoOptions,
    tls: Option<(PathBuf, PathBuf)>,
) -> Result<Demo, String> {
    start_on(&[opts.sim_listen], &[opts.listen], tls).await
}

/// The addresses `wxgate demo` tries when none is given: `default`, the next nine ports,
/// then any free port. 9000 (php-fpm) and 8080 are often taken, and the demo must start anyway.
pub fn fallback_addrs(default: SocketAddr) -> Vec<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = (0..10)
        .filter_map(|i| default.port().checked_add(i))
        .map(|port| SocketAddr::new(default.ip(), port))
        .collect();
    addrs.push(SocketAddr::new(default.ip(), 0));
    addrs
}

/// Starts `what` on the first of `addrs` that is not in use. Any other error stops; so does
/// the last address being in use, with a hint naming `flag`.
async fn first_free<T, F, Fut>(
    addrs: &[SocketAddr],
    flag: &str,
    what: &str,
    mut start: F,
) -> Result<T, String>
where
    F: FnMut(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<T>>,
{
    let mut in_use = None;
    for &addr in addrs {
        match start(addr).await {
            Ok(started) => return Ok(started),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => in_use = Some(addr),
            Err(e) => return Err(format!("cannot start {what} on {addr}: {e}")),
        }
    }
    Err(match in_use {
        Some(addr) => format!(
            "cannot start {what} on {addr}: the address is already in use; \
             choose another with {flag} (e.g. {flag} 127.0.0.1:0 for any free port)"
        ),
        None => format!("no address to start {what} on"),
    })
}

/// Like [`start_with`], on the first free address of `sim_addrs` for the simulator and of
/// `gateway_addrs` for the gateway (see [`fallback_addrs`]).
pub async fn start_on(
    sim_addrs: &[SocketAddr],
    gateway_addrs: &[SocketAddr],
    tls: Option<(PathBuf, PathBuf)>,
) -> Result<Demo, String> {
    let simulator = first_free(sim_addrs, "--sim-listen", "the simulator", |addr| {
        simulator::start(SimConfig::default(), addr)
    })
    .await?;

    let upstream = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot start the demo upstream: {e}"))?;
    let upstream_addr = upstream.local_addr().map_err(|e| e.to_string())?;

    // Fresh keys every run: nothing to configure, nothing to leak.
    let dir = std::env::temp_dir().join(format!("wxgate-demo-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let keys = KeyDir(dir.clone());
    let pem = generate_pem(Alg::ES256)?;
    std::fs::write(dir.join("jwt.pem"), pem)
        .map_err(|e| format!("cannot write the demo JWT key: {e}"))?;
    let session_secret: [u8; 32] = rand::random();
    let session_secret = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(session_secret)
    };

    let sim = simulator.url();
    // Paths go through toml's own quoting: a temp dir may hold characters TOML must escape.
    let tls_toml = match &tls {
        Some((cert, key)) => format!(
            "\n[server.tls]\ncert = {}\nkey = {}\n",
            toml::Value::String(cert.display().to_string()),
            toml::Value::String(key.display().to_string())
        ),
        None => String::new(),
    };
    let env = |name: &str| match name {
        "DEMO_APPSECRET" => Some(simulator::DEFAULT_SECRET.to_string()),
        "DEMO_SESSION_SECRET" => Some(session_secret.clone()),
        _ => None,
    };
    let gateway = first_free(gateway_addrs, "--listen", "the gateway", |listen| {
        let toml = demo_toml(listen, &tls_toml, &sim, upstream_addr);
        let gateway = Settings::from_toml(&toml, &dir.join("demo.toml"), &dir, &env)
            .map_err(|e| e.to_string())
            .and_then(|settings| Gateway::new(settings).map_err(|e| e.to_string()));
        async move {
            // Not a bind error: reported as is, the next address would not help.
            let gateway = gateway.map_err(std::io::Error::other)?;
            crate::server::start(Arc::new(gateway)).await
        }
    })
    .await?;

    let scheme = if tls.is_some() { "https" } else { "http" };
    let jwks_url = format!("{scheme}://{}/_wxgate/jwks.json", gateway.local_addr());
    let mut client = reqwest::Client::builder();
    if let Some((cert, _)) = &tls {
        // A self-signed development certificate: trust exactly it, nothing more.
        let pem =
            std::fs::read(cert).map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| e.to_string())?;
        client = client.add_root_certificate(cert);
    }
    let client = client.build().map_err(|e| e.to_string())?;
    tokio::spawn(serve_upstream(
        upstream,
        Arc::new(DemoUpstream::new(client, jwks_url, sim)),
    ));

    Ok(Demo {
        gateway,
        simulator,
        upstream_addr,
        scheme,
        keys,
    })
}

/// The demo's upstream: an ordinary app that only reads headers.
struct DemoUpstream {
    client: reqwest::Client,
    jwks_url: String,
    sim_url: String,
    jwks: OnceCell<jsonwebtoken::jwk::JwkSet>,
}

impl DemoUpstream {
    fn new(client: reqwest::Client, jwks_url: String, sim_url: String) -> DemoUpstream {
        DemoUpstream {
            client,
            jwks_url,
            sim_url,
            jwks: OnceCell::new(),
        }
    }

    /// Fetches the gateway's JWKS over HTTP once, as a real upstream would.
    async fn jwks(&self) -> Result<&jsonwebtoken::jwk::JwkSet, String> {
        self.jwks
            .get_or_try_init(|| async {
                let body = self
                    .client
                    .get(&self.jwks_url)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .bytes()
                    .await
                    .map_err(|e| e.to_string())?;
                serde_json::from_slice(&body).map_err(|e| e.to_string())
            })
            .await
    }

    /// Verifies the JWT against the JWKS the way an upstream should: kid, algorithm, iss, aud, exp.
    async fn verify(&self, token: &str) -> Result<serde_json::Value, String> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| format!("bad JWT header: {e}"))?;
        let kid = header.kid.ok_or("the JWT has no kid")?;
        let jwks = self.jwks().await?;
        let jwk = jwks
            .find(&kid)
            .ok_or_else(|| format!("no key {kid} in the JWKS"))?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.set_issuer(&["wxgate"]);
        validation.set_audience(&["upstream"]);
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| e.to_string())
    }

    async fn page(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let h = req.headers();
        let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        let openid = get("x-wechat-openid");
        let unionid = get("x-wechat-unionid");
        let jwt = get("x-wechat-jwt");
        if req.uri().path().starts_with("/api") {
            let body = serde_json::json!({ "openid": openid, "unionid": unionid, "path": req.uri().path() });
            return respond(StatusCode::OK, "application/json", body.to_string());
        }
        let (verdict, claims) = if jwt.is_empty() {
            (
                "no JWT (this route does not authenticate)".to_string(),
                String::new(),
            )
        } else {
            match self.verify(jwt).await {
                Ok(c) => (
                    "✔ signature verified against /_wxgate/jwks.json".to_string(),
                    serde_json::to_string_pretty(&c).unwrap_or_default(),
                ),
                Err(e) => (format!("✘ verification failed: {e}"), String::new()),
            }
        };
        let mut rows = String::new();
        for (name, value) in h {
            let v = value.to_str().unwrap_or("(binary)");
            let v = if name.as_str() == "x-wechat-jwt" && v.len() > 48 {
                format!("{}…", &v[..48])
            } else {
                v.to_string()
            };
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td></tr>",
                escape(name.as_str()),
                escape(&v)
            ));
        }
        let identity = if openid.is_empty() {
            "<p>No identity: this route has <code>auth = \"off\"</code>.</p>".to_string()
        } else {
            format!(
                "<p>X-WeChat-OpenId: <b id=\"openid\">{}</b><br>X-WeChat-UnionId: <b id=\"unionid\">{}</b></p>",
                escape(openid),
                escape(if unionid.is_empty() { "(none: not a follower)" } else { unionid })
            )
        };
        let sim = escape(&self.sim_url);
        let body = format!(
            "<h1>Hello from the upstream</h1>{identity}\
<p id=\"verdict\">{}</p><pre id=\"claims\">{}</pre>\
<p><a href=\"/\">Reload</a> · <a href=\"/_wxgate/session\">/_wxgate/session</a> · \
<a href=\"/public\">a public page</a> · <a href=\"/_wxgate/logout?return_to=/\">Log out</a> · \
<a href=\"{sim}/_sim/users?return=/\">Switch simulated user</a> (then log out)</p>\
<h2>Headers this upstream received</h2><table>{rows}</table>\
<p class=\"muted\">The upstream never sees an AppSecret, a code, a WeChat token or the gateway's cookies.</p>",
            escape(&verdict),
            escape(&claims)
        );
        respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            html_document("wxgate demo upstream", &body),
        )
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}

async fn serve_upstream(listener: TcpListener, app: Arc<DemoUpstream>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.page(&req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Where `wxgate demo` listens when not told.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
/// Where `wxgate demo` starts the simulator when not told.
pub const DEFAULT_SIM_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9000);

/// `wxgate demo`: start everything, print what to open, stop cleanly on Ctrl-C. An address
/// the user gave must be free; a default one in use falls back (see [`fallback_addrs`]).
pub async fn run_cli(
    listen: Option<SocketAddr>,
    sim_listen: Option<SocketAddr>,
) -> Result<(), String> {
    let stop = crate::server::termination_signal();
    let sim_addrs = sim_listen.map_or_else(|| fallback_addrs(DEFAULT_SIM_LISTEN), |a| vec![a]);
    let gateway_addrs = listen.map_or_else(|| fallback_addrs(DEFAULT_LISTEN), |a| vec![a]);
    let demo = start_on(&sim_addrs, &gateway_addrs, None).await?;
    let mut moved = Vec::new();
    if listen.is_none() && demo.gateway.local_addr() != DEFAULT_LISTEN {
        moved.push(format!(
            "{DEFAULT_LISTEN} is in use: the gateway listens on {} instead.",
            demo.gateway.local_addr()
        ));
    }
    if sim_listen.is_none() && demo.simulator.addr() != DEFAULT_SIM_LISTEN {
        moved.push(format!(
            "{DEFAULT_SIM_LISTEN} is in use: the simulator listens on {} instead.",
            demo.simulator.addr()
        ));
    }
    for line in moved {
        println!("{line}");
    }
    let url = demo.url();
    let sim = demo.simulator.url();
    let upstream = demo.upstream_addr;
    let lines = [
        String::new(),
        "wxgate demo is running.".into(),
        String::new(),
        format!("  Open {url}/ in a browser."),
        "    - A desktop browser walks the whole flow: the simulator first says 「请在微信客户端打开链接」;".into(),
        "      click its simulator-only \"treat this browser as WeChat\" link, and you land on the demo".into(),
        "      upstream showing your openid, unionid and the verified JWT.".into(),
        "    - The silent path with a WeChat User-Agent:".into(),
        format!("        curl -sL -c /tmp/wx.jar -b /tmp/wx.jar -A 'Mozilla/5.0 (iPhone) MicroMessenger/8.0.59' {url}/"),
        format!("    - Switch the simulated user at {sim}/_sim/users?return={url}/"),
        "      (alice follows the account, bob does not, carol is a snapshot-mode user),".into(),
        format!("      then log out at {url}/_wxgate/logout"),
        String::new(),
        format!("  Gateway    {url}   (/ needs login, /api answers 401 JSON, /public has no auth,"),
        "             /wechat-only shows other browsers the 「请在微信客户端打开链接」 page with a QR code)".into(),
        format!("  Simulator  {sim}   (stands in for open.weixin.qq.com and api.weixin.qq.com)"),
        format!("  Upstream   http://{upstream}"),
        String::new(),
        "Press Ctrl-C to stop.".into(),
    ];
    println!("{}", lines.join("\n"));
    stop.await;
    println!("stopping…");
    demo.shutdown().await;
    Ok(())
}

/// The demo's gateway config, listening on `listen`.
fn demo_toml(listen: SocketAddr, tls_toml: &str, sim: &str, upstream_addr: SocketAddr) -> String {
    format!(
        r#"
[server]
listen = "{listen}"
request_timeout = "10s"
shutdown_timeout = "5s"
{tls_toml}

[wechat]
appid = "{appid}"
secret = "${{DEMO_APPSECRET}}"
api_base = "{sim}"
open_base = "{sim}"
unionid = "follower"

[session]
secret = "${{DEMO_SESSION_SECRET}}"
ttl = "1d"

[jwt]
algorithm = "ES256"
private_key = "jwt.pem"

[[route]]
name = "public"
path = "/public"
upstream = "http://{upstream_addr}"
auth = "off"

[[route]]
name = "api"
path = "/api"
upstream = "http://{upstream_addr}"
api = true
non_wechat = "login"

[[route]]
name = "wechat-only"
path = "/wechat-only"
upstream = "http://{upstream_addr}"

[[route]]
name = "demo"
path = "/"
upstream = "http://{upstream_addr}"
non_wechat = "login"
"#,
        appid = simulator::DEFAULT_APPID,
    )
}
