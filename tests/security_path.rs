//! Issue #10, finding 1: routing decides on the normalised path, and the upstream gets exactly
//! the path that was routed. Every spelling of a protected path (encoded, dot-segments,
//! repeated slashes, case, `;parameters`) must get the protected route's policy, and what
//! cannot be normalised safely is refused with 400, over HTTP/1.1 and HTTP/2 alike.

#[path = "common/gw.rs"]
mod gw;
#[path = "common/sim.rs"]
mod sim;

use gw::{Browser, Gw, GwConfig, Seen, HTML_ACCEPT, WECHAT_UA};

/// The review's first configuration: the site is optional, `/admin` requires a login.
const OPTIONAL_SITE: &str = r#"
[[route]]
name = "site"
path = "/"
upstream = UPSTREAM
auth = "optional"

[[route]]
name = "admin"
path = "/admin"
upstream = UPSTREAM
auth = "required"
"#;

/// The review's second configuration: everything requires a login except `/public`.
const REQUIRED_SITE: &str = r#"
[[route]]
name = "site"
path = "/"
upstream = UPSTREAM
auth = "required"

[[route]]
name = "public"
path = "/public"
upstream = UPSTREAM
auth = "off"
"#;

/// `GET target` from a WeChat browser over a raw socket (so that nothing normalises the
/// target on the way), with `extra` header lines. Returns (status, head, body).
async fn get(gw: &Gw, target: &str, extra: &str) -> (u16, String, String) {
    let head = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {WECHAT_UA}\r\nAccept: {HTML_ACCEPT}\r\n{extra}",
        gw.addr()
    );
    gw::raw_request(gw.addr(), &head).await
}

fn location(head: &str) -> String {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// The request must have started a login (a redirect to WeChat's authorize page), never
/// reached the upstream.
fn assert_login(gw: &Gw, sim: &str, target: &str, (status, head, body): (u16, String, String)) {
    assert_eq!(
        status, 302,
        "{target} must start a login, not be forwarded: {head}\n{body}"
    );
    let loc = location(&head);
    assert!(
        loc.starts_with(sim),
        "{target}: redirected to {loc:?}, not to WeChat"
    );
    assert!(!body.contains("\"uri\""), "{target} reached the upstream");
    let _ = gw;
}

fn assert_refused(target: &str, (status, head, body): (u16, String, String)) {
    assert_eq!(status, 400, "{target} must be refused: {head}\n{body}");
    assert!(!body.contains("\"uri\""), "{target} reached the upstream");
}

/// The request was forwarded; returns the target the upstream received.
fn forwarded(target: &str, (status, head, body): (u16, String, String)) -> Seen {
    assert_eq!(status, 200, "{target} must be forwarded: {head}\n{body}");
    Seen::parse(&body)
}

/// Spellings of `/admin` that nginx, Tomcat or a case-insensitive upstream serve as `/admin`.
const ADMIN_SPELLINGS: &[&str] = &[
    "/admin",
    "/%61dmin",
    "/%61%64%6D%69%6E",
    "//admin",
    "///admin//",
    "/admin;jsessionid=x",
    "/admin;jsessionid=x/page",
    "/./admin",
    "/%2e/admin",
    "/x/../admin",
    "/x/%2e%2e/admin",
    "/x/.%2E/admin",
    "/x/y/../../admin",
    "/../admin",
    "/ADMIN",
    "/Admin/page",
    "/%41DMIN/",
    "/admin/./",
    "/admin?next=/",
];

/// Paths that cannot be normalised safely.
const REFUSED: &[&str] = &[
    "/x%2f..%2fadmin",
    "/x/..%2Fadmin",
    "/x/..%5cadmin",
    "/x/..%5Cadmin",
    "/admin%00",
    "/admin%0d%0aX-Injected:%201",
    "/x/%252e%252e/admin",
    "/%2561dmin",
    "/x/%25%32%65%25%32%65/admin",
    "/%zz/admin",
    "/admin%",
    "/x/..;/admin",
    "/x/..;jsessionid=1/admin",
    "/x/.;/admin",
    "/x/%2e%2e;/admin",
    "/;x/admin",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_a_required_path_gets_its_policy() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway_with_routes(&s, GwConfig::default(), OPTIONAL_SITE, "").await;
    let sim_url = s.url();
    for target in ADMIN_SPELLINGS {
        assert_login(&gw, &sim_url, target, get(&gw, target, "").await);
    }
    for target in REFUSED {
        assert_refused(target, get(&gw, target, "").await);
    }
    // Raw backslashes: refused (by the HTTP parser or by the gateway), never forwarded.
    let (status, _, body) = get(&gw, "/x/..\\admin", "").await;
    assert_eq!(status, 400, "raw backslash: {body}");

    // The optional rest of the site is forwarded, with exactly the path that was routed and
    // the query as sent.
    let cases = [
        ("/page", "/page"),
        ("/a/./b/../c?q=%2e%2e/x", "/a/c?q=%2e%2e/x"),
        ("//a//b/", "/a/b/"),
        ("/%7Euser/%41?x", "/~user/A?x"),
        ("/Mixed/Case;p=1", "/Mixed/Case;p=1"),
        ("/adminx", "/adminx"),
        ("/app/;jsessionid=1", "/app/;jsessionid=1"),
        ("/caf%C3%A9/%3b", "/caf%C3%A9/%3b"),
    ];
    for (target, want) in cases {
        let seen = forwarded(target, get(&gw, target, "").await);
        assert_eq!(seen.uri(), want, "{target}");
        assert!(seen.header("x-wechat-openid").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_in_user_reaches_the_path_that_was_routed() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway_with_routes(&s, GwConfig::default(), OPTIONAL_SITE, "").await;
    let mut b = Browser::wechat();
    gw::logged_in(&mut b, &gw, "/admin", "alice").await;
    let cookie = format!("Cookie: {}\r\n", b.cookie_header().expect("cookies"));
    let cases = [
        ("/x/../ADMIN;jsessionid=1?q=1", "/ADMIN;jsessionid=1?q=1"),
        ("//admin//%70age", "/admin/page"),
        ("/admin/a/%2e%2e/b", "/admin/b"),
    ];
    for (target, want) in cases {
        let seen = forwarded(target, get(&gw, target, &cookie).await);
        assert_eq!(seen.uri(), want, "{target}");
        assert!(
            seen.header("x-wechat-openid").is_some(),
            "{target}: forwarded with the identity"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_route_cannot_carry_a_request_out_of_itself() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway_with_routes(&s, GwConfig::default(), REQUIRED_SITE, "").await;
    let sim_url = s.url();
    for target in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/.%2e/admin",
        "/public/%2E%2E/admin",
        "/PUBLIC/%2e%2e/admin",
        "/public/x/../../admin",
        "/public//../admin",
        "/public/..",
        "/public/%2e%2e",
        "/publicx",
    ] {
        assert_login(&gw, &sim_url, target, get(&gw, target, "").await);
    }
    for target in [
        "/public/..;/admin",
        "/public/..;x=1/admin",
        "/public/.;/admin",
        "/public/..;",
        "/public/%2e%2e;/admin",
        "/public/%252e%252e/admin",
        "/public/.%252e/admin",
        "/public/..%2fadmin",
        "/public/..%5cadmin",
        "/public/%2e%2e%2fadmin",
        "/public/%00/../admin",
    ] {
        assert_refused(target, get(&gw, target, "").await);
    }
    let cases = [
        ("/public/x", "/public/x"),
        ("/public", "/public"),
        ("/Public/a/./b?z=1", "/Public/a/b?z=1"),
        ("/public;jsessionid=1/x", "/public;jsessionid=1/x"),
        ("/public/a/../b", "/public/b"),
    ];
    for (target, want) in cases {
        let seen = forwarded(target, get(&gw, target, "").await);
        assert_eq!(seen.uri(), want, "{target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_paths_are_never_forwarded_in_any_spelling() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway_with_routes(&s, GwConfig::default(), OPTIONAL_SITE, "").await;
    // Spellings that normalise to a gateway endpoint are served by the gateway.
    for target in [
        "/_wxgate/healthz",
        "//_wxgate/healthz",
        "/%5fwxgate/healthz",
        "/_wxgate/./healthz",
        "/x/../_wxgate/healthz",
        "/_wxgate//healthz",
    ] {
        let (status, head, body) = get(&gw, target, "").await;
        assert_eq!((status, body.as_str()), (200, "ok\n"), "{target}: {head}");
    }
    // Other spellings of the prefix are the gateway's too, and answer 404.
    for target in [
        "/_WXGATE/healthz",
        "/_Wxgate/session",
        "/_wxgate;x/healthz",
        "/_wxgate",
        "/_WXGATE",
        "/_wxgate;x",
        "/_wxgate/healthz;x",
        "/_wxgate/nothing",
        "/%5FWXGATE/jwks.json",
    ] {
        let (status, head, body) = get(&gw, target, "").await;
        assert_eq!(status, 404, "{target}: {head}\n{body}");
        assert!(!body.contains("\"uri\""), "{target} reached the upstream");
    }
    // A look-alike that is not the prefix is an ordinary path.
    let seen = forwarded("/_wxgatex", get(&gw, "/_wxgatex", "").await);
    assert_eq!(seen.uri(), "/_wxgatex");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_paths_are_normalised_the_same_way() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway_with_routes(&s, GwConfig::default(), OPTIONAL_SITE, "").await;
    let headers = [("user-agent", WECHAT_UA), ("accept", HTML_ACCEPT)];
    let url = |p: &str| format!("http://{}{p}", gw.addr());
    for target in ["/x/../admin", "/ADMIN", "//admin", "/%61dmin;p=1"] {
        let (status, location, body) = gw::h2c_get(gw.addr(), &url(target), &headers).await;
        assert_eq!(status, 302, "h2 {target}: {body}");
        assert!(
            location.is_some_and(|l| l.starts_with(&s.url())),
            "h2 {target}: a login"
        );
    }
    for target in ["/x/..;/admin", "/x%2fadmin", "/x/%252e%252e/admin"] {
        let (status, _, body) = gw::h2c_get(gw.addr(), &url(target), &headers).await;
        assert_eq!(status, 400, "h2 {target}: {body}");
    }
    let (status, _, body) = gw::h2c_get(gw.addr(), &url("/a/./b/../c?q=1"), &headers).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(Seen::parse(&body).uri(), "/a/c?q=1");
}
