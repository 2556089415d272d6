//! The JWT the gateway forwards after a real login, verified against `/_wxgate/jwks.json` by
//! two independent verifiers, for every algorithm: the `jsonwebtoken` crate here, and PyJWT
//! via `tests/python/verify_jwt.py` (interpreter `$WXGATE_TEST_PYTHON`, else the
//! `target/pyenv` venv if present, else `python3`; it needs `pyjwt` and `cryptography`).

#[path = "common/gw.rs"]
mod gw;
#[path = "common/sim.rs"]
mod sim;

use std::process::Stdio;

use tokio::io::AsyncWriteExt as _;

use gw::{Browser, GwConfig};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};
use wxgate::simulator::{SimHandle, DEFAULT_APPID};

const ALGS: [&str; 4] = ["HS256", "RS256", "ES256", "EdDSA"];

const INSTALL_HINT: &str = "PyJWT missing: pip install pyjwt cryptography into $WXGATE_TEST_PYTHON's environment \
(e.g. python3 -m venv target/pyenv && target/pyenv/bin/pip install wechatpy cryptography pyjwt && export WXGATE_TEST_PYTHON=$PWD/target/pyenv/bin/python), or run ./scripts/test.sh";

/// One logged-in user's forwarded token, with what a verifier needs.
struct Issued {
    alg: &'static str,
    token: String,
    jwks: Value,
    openid: String,
    unionid: Option<String>,
}

/// Starts a gateway signing with `alg`, logs `user` in, returns the token the upstream got.
async fn issue(s: &SimHandle, alg: &'static str, user: &str) -> Issued {
    let gw = gw::start_gateway(
        s,
        GwConfig {
            algorithm: alg,
            ..GwConfig::default()
        },
    )
    .await;
    let mut b = Browser::wechat();
    gw::logged_in(&mut b, &gw, "/", user).await;
    let first = b.get(&gw.url("/a")).await.seen();
    let token = first.header("x-wechat-jwt").expect("JWT forwarded");
    // Signed once per session and reused.
    for path in ["/b", "/api/c", "/opt/d"] {
        let again = b.get(&gw.url(path)).await.seen();
        assert_eq!(
            again.header("x-wechat-jwt").as_deref(),
            Some(token.as_str()),
            "{alg} {path}"
        );
    }
    // Another session of the same user gets its own token.
    let mut b2 = Browser::wechat();
    gw::logged_in(&mut b2, &gw, "/", user).await;
    let other = b2
        .get(&gw.url("/a"))
        .await
        .seen()
        .header("x-wechat-jwt")
        .unwrap();
    assert_ne!(other, token, "{alg}: each session signs its own token");

    let jwks_resp = b.get(&gw.url("/_wxgate/jwks.json")).await;
    assert_eq!(jwks_resp.status, 200);
    assert_eq!(
        jwks_resp.header("content-type").as_deref(),
        Some("application/json")
    );
    let jwks = jwks_resp.json();
    gw.stop().await;
    Issued {
        alg,
        token,
        jwks,
        openid: s.openid(user, DEFAULT_APPID).unwrap(),
        unionid: s.unionid(user, DEFAULT_APPID).filter(|_| user == "alice"),
    }
}

fn jwt_alg(alg: &str) -> Algorithm {
    match alg {
        "HS256" => Algorithm::HS256,
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        "EdDSA" => Algorithm::EdDSA,
        other => panic!("{other}"),
    }
}

/// Verifies with the `jsonwebtoken` crate against the JWKS (HS256: the shared secret).
fn verify_in_rust(i: &Issued) -> Value {
    let header = decode_header(&i.token).expect("JWT header");
    assert_eq!(header.alg, jwt_alg(i.alg), "{}", i.alg);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let kid = header.kid.expect("kid in the header");
    let keys = i.jwks["keys"].as_array().expect("keys array");
    for k in keys {
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(
                k.get(private).is_none(),
                "{}: JWKS publishes {private}",
                i.alg
            );
        }
    }
    let key = if i.alg == "HS256" {
        assert!(keys.is_empty(), "HS256 publishes nothing: {}", i.jwks);
        DecodingKey::from_secret(gw::HS_SECRET.as_bytes())
    } else {
        assert_eq!(keys.len(), 1, "{}", i.jwks);
        let set: JwkSet = serde_json::from_value(i.jwks.clone()).expect("a JWK set");
        let jwk = set
            .find(&kid)
            .unwrap_or_else(|| panic!("{}: no JWKS key {kid}", i.alg));
        DecodingKey::from_jwk(jwk).expect("JWK to key")
    };
    let mut v = Validation::new(jwt_alg(i.alg));
    v.set_audience(&["echo-upstream"]);
    v.set_issuer(&["wxgate-test"]);
    v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    v.validate_nbf = true;
    let data = decode::<Value>(&i.token, &key, &v)
        .unwrap_or_else(|e| panic!("{}: the forwarded JWT does not verify: {e}", i.alg));
    let c = data.claims;
    assert_eq!(c["sub"], i.openid);
    assert_eq!(c["openid"], i.openid);
    match &i.unionid {
        Some(u) => assert_eq!(c["unionid"], *u),
        None => assert!(c.get("unionid").is_none(), "{c}"),
    }
    assert_eq!(c["appid"], DEFAULT_APPID);
    assert_eq!(c["scope"], "snsapi_base");
    let (iat, nbf, exp) = (
        c["iat"].as_u64().unwrap(),
        c["nbf"].as_u64().unwrap(),
        c["exp"].as_u64().unwrap(),
    );
    assert_eq!(iat, nbf);
    assert_eq!(exp - iat, 300, "jwt.ttl = 5m");
    assert!(iat.abs_diff(gw::now()) < 120);
    assert!(c["jti"].as_str().is_some_and(|j| j.len() >= 16), "{c}");
    let mut names: Vec<&String> = c.as_object().unwrap().keys().collect();
    names.sort();
    let mut expected = vec![
        "appid", "aud", "exp", "iat", "iss", "jti", "nbf", "openid", "scope", "sub",
    ];
    if i.unionid.is_some() {
        expected.push("unionid");
        expected.sort();
    }
    assert_eq!(names, expected, "{}", i.alg);

    // Negative controls: a tampered payload and a foreign key are refused.
    let parts: Vec<&str> = i.token.split('.').collect();
    let forged_body = base64_url(&json!({"sub": "attacker"}).to_string());
    let forged = format!("{}.{}.{}", parts[0], forged_body, parts[2]);
    assert!(
        decode::<Value>(&forged, &key, &v).is_err(),
        "{}: forged payload",
        i.alg
    );
    let mut wrong_aud = Validation::new(jwt_alg(i.alg));
    wrong_aud.set_audience(&["another-service"]);
    assert!(
        decode::<Value>(&i.token, &key, &wrong_aud).is_err(),
        "{}: audience",
        i.alg
    );
    if i.alg == "HS256" {
        let other = DecodingKey::from_secret(b"some-other-secret-of-32-bytes-or-more!!");
        assert!(decode::<Value>(&i.token, &other, &v).is_err());
    }
    c
}

fn base64_url(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_jwt_verifies_against_the_jwks_for_every_algorithm() {
    let s = sim::start_default().await;
    let mut kids = Vec::new();
    for alg in ALGS {
        for user in ["alice", "bob"] {
            let issued = issue(&s, alg, user).await;
            verify_in_rust(&issued);
            kids.push(decode_header(&issued.token).unwrap().kid.unwrap());
        }
    }
    // Each gateway's key has its own kid (RS256 uses one fixture key in both runs).
    assert_eq!(
        kids[2], kids[3],
        "RS256: same key, same kid (RFC 7638 thumbprint)"
    );
    assert_ne!(kids[4], kids[5], "ES256: generated keys differ");
}

#[test]
fn pyjwt_is_installed() {
    sim::require_python_modules("jwt, cryptography", INSTALL_HINT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_jwt_verifies_with_pyjwt_for_every_algorithm() {
    let s = sim::start_default().await;
    let mut cases = Vec::new();
    for alg in ALGS {
        let i = issue(&s, alg, "alice").await;
        let c = verify_in_rust(&i);
        let mut expected = json!({
            "sub": i.openid,
            "openid": i.openid,
            "appid": DEFAULT_APPID,
            "scope": "snsapi_base",
            "iss": "wxgate-test",
            "aud": "echo-upstream",
            "jti": c["jti"],
        });
        if let Some(u) = &i.unionid {
            expected["unionid"] = json!(u);
        }
        cases.push(json!({
            "alg": alg,
            "token": i.token,
            "jwks": i.jwks,
            "secret": gw::HS_SECRET,
            "iss": "wxgate-test",
            "aud": "echo-upstream",
            "claims": expected,
        }));
    }
    let input = Value::from(cases).to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/verify_jwt.py");
    let py = sim::python();
    let mut child = tokio::process::Command::new(&py)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {py}: {e}. {INSTALL_HINT}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("PyJWT finishes within a minute")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(3), "{INSTALL_HINT}\n{stderr}");
    assert!(
        out.status.success(),
        "PyJWT refused a token\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("pyjwt: all 4 checks passed"), "{stdout}");
    for alg in ALGS {
        assert!(stdout.contains(&format!("verified {alg} kid=")), "{stdout}");
    }
}

fn claim(token: &str, name: &str) -> u64 {
    use base64::Engine as _;
    let body = token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .expect("base64url payload");
    let v: Value = serde_json::from_slice(&bytes).expect("JSON payload");
    v[name].as_u64().unwrap_or_else(|| panic!("{name} in {v}"))
}

/// One token per session, reused until a quarter of its lifetime is left, then re-signed
/// before the old one expires. With the shortest allowed ttl (30 s) that is at iat + 23 s.
#[tokio::test]
async fn jwt_is_reused_until_near_expiry_then_resigned() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(
        &s,
        GwConfig {
            jwt_ttl: "30s",
            ..GwConfig::default()
        },
    )
    .await;
    let mut b = Browser::wechat();
    gw::logged_in(&mut b, &gw, "/", "alice").await;
    let first = b
        .get(&gw.url("/a"))
        .await
        .seen()
        .header("x-wechat-jwt")
        .unwrap();
    let (iat, exp) = (claim(&first, "iat"), claim(&first, "exp"));
    assert_eq!(exp - iat, 30);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(35);
    let renewed = loop {
        assert!(std::time::Instant::now() < deadline, "never re-signed");
        let now = gw::now();
        let token = b
            .get(&gw.url("/a"))
            .await
            .seen()
            .header("x-wechat-jwt")
            .unwrap();
        if token == first {
            assert!(
                now < exp,
                "the old token was still sent at {now}, exp {exp}"
            );
        } else {
            // Not before three quarters of the lifetime, and before the old one expired.
            assert!(now >= iat + 22, "re-signed early: {now} vs iat {iat}");
            assert!(now < exp, "re-signed only after expiry: {now} vs exp {exp}");
            break token;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert!(claim(&renewed, "iat") >= iat + 22);
    assert_eq!(claim(&renewed, "exp") - claim(&renewed, "iat"), 30);
    // And the renewed one is reused in turn.
    let again = b
        .get(&gw.url("/b"))
        .await
        .seen()
        .header("x-wechat-jwt")
        .unwrap();
    assert_eq!(again, renewed);
    gw.stop().await;
}
