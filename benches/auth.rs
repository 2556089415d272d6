//! Micro-benchmarks of the per-request authentication work (see bench/README.md):
//! - `auth/cache_hit_rewrite`: what an authenticated request costs on top of proxying, on a
//!   session cache hit: find the session cookie, cache lookup, strip client identity headers
//!   and the gateway's cookies, write X-WeChat-OpenId/-UnionId and the cached JWT;
//! - `auth/session_open`: decrypting and parsing a session cookie (what a cache miss adds,
//!   with one JWT signing);
//! - `jwt/sign/<alg>`: one JWT signing per algorithm.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use wxgate::auth::bench_support as support;
use wxgate::auth::jwt::{generate_pem, Alg, JwtSigner};
use wxgate::auth::Auth;
use wxgate::config::Settings;

const WECHAT_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.59(0x18003b26) NetType/WIFI Language/zh_CN";
const RSA_PEM: &[u8] = include_bytes!("../tests/fixtures/jwt/rsa-test-only.pem");

/// A gateway's auth part as `wxgate run` builds it: ES256 JWTs, unionid for followers.
fn auth() -> Auth {
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = generate_pem(Alg::ES256).expect("ES256 key");
    std::fs::write(dir.path().join("jwt.pem"), pem).expect("write key");
    let toml = r#"
[server]
listen = "127.0.0.1:0"

[wechat]
appid = "wx0123456789abcdef"
secret = "${SECRET}"
api_base = "http://127.0.0.1:9"
open_base = "http://127.0.0.1:9"
unionid = "follower"

[session]
secret = "${SESSION}"

[jwt]
algorithm = "ES256"
private_key = "jwt.pem"

[[route]]
name = "app"
upstream = "http://127.0.0.1:3000"
"#;
    let env = |name: &str| match name {
        "SECRET" => Some("0123456789abcdef0123456789abcdef".to_string()),
        "SESSION" => Some("bench-session-secret-0123456789abcdef-0123".to_string()),
        _ => None,
    };
    let settings = Settings::from_toml(toml, &dir.path().join("gateway.toml"), dir.path(), &env)
        .expect("settings");
    Auth::from_settings(&settings, &wxgate::store::Stores::memory(), None)
        .expect("auth")
        .expect("auth configured")
}

/// The headers of a typical page request from the WeChat browser with a session.
fn request_headers(cookie_name: &str, sealed: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut add = |k: &'static str, v: &str| {
        h.append(
            HeaderName::from_static(k),
            HeaderValue::from_str(v).expect("header value"),
        );
    };
    add("host", "h5.example.com");
    add("user-agent", WECHAT_UA);
    add(
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    );
    add("accept-language", "zh-CN,zh-Hans;q=0.9");
    add("accept-encoding", "gzip, deflate");
    add("referer", "https://h5.example.com/shop");
    add(
        "cookie",
        &format!("theme=dark; {cookie_name}={sealed}; cart=3f2a9c"),
    );
    h
}

fn per_request(c: &mut Criterion) {
    let auth = auth();
    let sealed =
        support::seal_session(&auth, "oBench-openid-0123456789abc", Some("uBench-unionid"));
    let name = support::session_cookie_name(&auth, false).to_string();
    let template = request_headers(&name, &sealed);
    // Warm the cache: the first request opens the cookie and signs the JWT.
    assert!(support::authenticate_and_rewrite(
        &auth,
        &mut template.clone(),
        false
    ));
    let mut g = c.benchmark_group("auth");
    g.bench_function("cache_hit_rewrite", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |h| black_box(support::authenticate_and_rewrite(&auth, h, false)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("session_open", |b| {
        b.iter(|| black_box(support::open_session(&auth, black_box(&sealed))))
    });
    g.finish();

    // What the rewrite produces, checked once so the benchmark measures the real thing.
    let mut h = template.clone();
    support::authenticate_and_rewrite(&auth, &mut h, false);
    assert_eq!(h["x-wechat-openid"], "oBench-openid-0123456789abc");
    assert!(h.contains_key("x-wechat-jwt"));
    assert_eq!(h[header::COOKIE], "theme=dark; cart=3f2a9c");
}

fn jwt_signing(c: &mut Criterion) {
    let ttl = Duration::from_secs(300);
    let signer = |alg: Alg| -> JwtSigner {
        let (i, a) = ("wxgate".to_string(), "upstream".to_string());
        match alg {
            Alg::HS256 => JwtSigner::from_secret(&[7u8; 32], i, a, ttl),
            Alg::RS256 => JwtSigner::from_pem(alg, RSA_PEM, i, a, ttl),
            Alg::ES256 | Alg::EdDSA => {
                let pem = generate_pem(alg).expect("key");
                JwtSigner::from_pem(alg, pem.as_bytes(), i, a, ttl)
            }
        }
        .expect("signer")
    };
    let now = wxgate::auth::now();
    let mut g = c.benchmark_group("jwt/sign");
    for alg in [Alg::HS256, Alg::RS256, Alg::ES256, Alg::EdDSA] {
        let s = signer(alg);
        g.bench_function(alg.as_str(), |b| {
            b.iter(|| {
                black_box(s.sign(
                    black_box("oBench-openid-0123456789abc"),
                    Some("uBench-unionid"),
                    "wx0123456789abcdef",
                    "snsapi_base",
                    now,
                ))
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = per_request, jwt_signing
}
criterion_main!(benches);
