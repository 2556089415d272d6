//! The JWT the gateway forwards upstream: key loading (PEM or HMAC secret),
//! signing with a `kid` (RFC 7638 thumbprint), and the JWKS document that
//! lets upstreams verify it. Everything but the signature is precomputed.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore as _;
use ring::signature::{self, KeyPair as _};
use rustls_pemfile::Item;
use serde::Serialize;

/// Minimum HS256 secret length: RFC 7518 §3.2 requires a key at least as
/// long as the hash output (32 bytes).
pub const MIN_HMAC_SECRET_LEN: usize = 32;

/// The signing algorithm is part of the configuration (a leaf), named `Alg` here.
pub use crate::config::JwtAlgorithm as Alg;

/// jsonwebtoken's name for the configured algorithm.
fn jsonwebtoken_alg(alg: Alg) -> Algorithm {
    match alg {
        Alg::HS256 => Algorithm::HS256,
        Alg::RS256 => Algorithm::RS256,
        Alg::ES256 => Algorithm::ES256,
        Alg::EdDSA => Algorithm::EdDSA,
    }
}

/// The claims of a forwarded token. `sub` is the openid.
#[derive(Debug, Clone, Serialize)]
pub struct Claims<'a> {
    pub iss: &'a str,
    pub aud: &'a str,
    pub sub: &'a str,
    pub openid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unionid: Option<&'a str>,
    pub appid: &'a str,
    pub scope: &'a str,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: &'a str,
}

/// Signs identity tokens with one key. Holds private key material, so its
/// Debug output is redacted.
pub struct JwtSigner {
    alg: Alg,
    kid: String,
    /// Header with `alg`, `typ: "JWT"` and `kid`, built once.
    header: Header,
    key: EncodingKey,
    issuer: String,
    audience: String,
    ttl_secs: u64,
    jwks: Vec<u8>,
    /// The public key as a JWK (`None` for HS256, whose secret is never published).
    jwk: Option<serde_json::Value>,
}

impl fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print `key`: it is the private key (or the HMAC secret).
        f.debug_struct("JwtSigner")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl_secs", &self.ttl_secs)
            .field("key", &"<redacted>")
            .finish()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// RFC 7638 thumbprint over the required members in lexicographic order.
/// The members are base64url strings or fixed names, so no JSON escaping is
/// ever needed and the `format!` below is the canonical form.
fn rsa_thumbprint(n: &str, e: &str) -> String {
    b64(&sha256(
        format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#).as_bytes(),
    ))
}

fn ec_thumbprint(crv: &str, x: &str, y: &str) -> String {
    b64(&sha256(
        format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#).as_bytes(),
    ))
}

fn okp_thumbprint(crv: &str, x: &str) -> String {
    b64(&sha256(
        format!(r#"{{"crv":"{crv}","kty":"OKP","x":"{x}"}}"#).as_bytes(),
    ))
}

/// The private key found in a PEM file.
enum PemKey {
    Pkcs1(Vec<u8>),
    Pkcs8(Vec<u8>),
    Sec1,
}

/// Finds the first private key in `pem`, explaining what is there instead
/// when there is none.
fn read_pem_key(pem: &[u8]) -> Result<PemKey, String> {
    let mut other: Option<&str> = None;
    for item in rustls_pemfile::read_all(&mut &pem[..]) {
        match item.map_err(|e| format!("not a valid PEM file: {e}"))? {
            Item::Pkcs1Key(k) => return Ok(PemKey::Pkcs1(k.secret_pkcs1_der().to_vec())),
            Item::Pkcs8Key(k) => return Ok(PemKey::Pkcs8(k.secret_pkcs8_der().to_vec())),
            Item::Sec1Key(_) => return Ok(PemKey::Sec1),
            Item::X509Certificate(_) => other = other.or(Some("a certificate")),
            Item::SubjectPublicKeyInfo(_) => other = other.or(Some("a public key")),
            _ => other = other.or(Some("a PEM block that is not a key")),
        }
    }
    if pem
        .windows(b"ENCRYPTED PRIVATE KEY".len())
        .any(|w| w == b"ENCRYPTED PRIVATE KEY")
    {
        return Err(
            "the PEM holds an encrypted private key, which is not supported: \
                    decrypt it with `openssl pkcs8 -in KEY -nocrypt -out PLAIN`"
                .to_string(),
        );
    }
    Err(match other {
        Some(what) => format!("the PEM holds {what} but no private key"),
        None => "not a PEM private key (no -----BEGIN PRIVATE KEY----- block found)".to_string(),
    })
}

/// Names the kind of key in a PKCS#8 document, for error messages; `None`
/// when it is none that ring can load.
fn pkcs8_kind(der: &[u8]) -> Option<&'static str> {
    let rng = ring::rand::SystemRandom::new();
    if signature::RsaKeyPair::from_pkcs8(der).is_ok() {
        Some("an RSA key")
    } else if signature::EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        der,
        &rng,
    )
    .is_ok()
    {
        Some("a P-256 EC key")
    } else if signature::EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        der,
        &rng,
    )
    .is_ok()
    {
        Some("a P-384 EC key")
    } else if signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).is_ok() {
        Some("an Ed25519 key")
    } else {
        None
    }
}

/// The error for a PKCS#8 key that `alg` could not load: names the key
/// type actually found, or passes on ring's reason if it is no known type.
fn pkcs8_error(alg: Alg, wanted: &str, der: &[u8], e: ring::error::KeyRejected) -> String {
    match pkcs8_kind(der) {
        Some(kind) => format!("{alg} needs {wanted}, but the PEM holds {kind}"),
        None => format!("invalid {wanted}: {e}"),
    }
}

/// Reads one DER TLV: (tag, content, rest). Lengths up to 4 bytes.
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (len_bytes, rest) = rest.split_at(n);
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (content, rest) = rest.split_at(len);
    Some((tag, content, rest))
}

/// The PKCS#1 RSAPrivateKey inside a PKCS#8 PrivateKeyInfo
/// (SEQUENCE { INTEGER version, AlgorithmIdentifier, OCTET STRING key }):
/// jsonwebtoken signs RSA from PKCS#1 DER.
fn pkcs8_inner_key(der: &[u8]) -> Option<&[u8]> {
    let (0x30, info, _) = der_tlv(der)? else {
        return None;
    };
    let (0x02, _, rest) = der_tlv(info)? else {
        return None;
    };
    let (0x30, _, rest) = der_tlv(rest)? else {
        return None;
    };
    let (0x04, key, _) = der_tlv(rest)? else {
        return None;
    };
    Some(key)
}

/// Public JWK members and thumbprint of an RSA key (n, e big-endian
/// without leading zeros, base64url).
fn rsa_jwk(pair: &signature::RsaKeyPair) -> (serde_json::Value, String) {
    let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
    let (n, e) = (b64(&public.n), b64(&public.e));
    let kid = rsa_thumbprint(&n, &e);
    (serde_json::json!({ "kty": "RSA", "n": n, "e": e }), kid)
}

impl JwtSigner {
    /// Loads an RS256, ES256 or EdDSA private key from PEM. RS256 takes
    /// PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`), 2048 bits or
    /// more; ES256 (P-256) and EdDSA (Ed25519) take PKCS#8.
    pub fn from_pem(
        alg: Alg,
        pem: &[u8],
        issuer: String,
        audience: String,
        ttl: Duration,
    ) -> Result<Self, String> {
        let key = read_pem_key(pem)?;
        let (encoding_key, jwk_params, kid) = match (alg, key) {
            (Alg::HS256, _) => {
                return Err("HS256 uses a shared secret, not a PEM key".to_string());
            }
            (Alg::RS256, PemKey::Sec1) => {
                return Err("RS256 needs an RSA private key, but the PEM holds an EC key".into());
            }
            (Alg::RS256, PemKey::Pkcs1(der)) => {
                let pair = signature::RsaKeyPair::from_der(&der)
                    .map_err(|e| format!("invalid RSA private key: {e}"))?;
                let (params, kid) = rsa_jwk(&pair);
                (EncodingKey::from_rsa_der(&der), params, kid)
            }
            (Alg::RS256, PemKey::Pkcs8(der)) => {
                let pair = signature::RsaKeyPair::from_pkcs8(&der)
                    .map_err(|e| pkcs8_error(alg, "an RSA private key", &der, e))?;
                // jsonwebtoken signs RSA from the PKCS#1 structure inside.
                let pkcs1 =
                    pkcs8_inner_key(&der).ok_or("invalid RSA private key: malformed PKCS#8")?;
                let (params, kid) = rsa_jwk(&pair);
                (EncodingKey::from_rsa_der(pkcs1), params, kid)
            }
            (Alg::ES256, PemKey::Pkcs8(der)) => {
                let rng = ring::rand::SystemRandom::new();
                let pair = signature::EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &der,
                    &rng,
                )
                .map_err(|e| pkcs8_error(alg, "a P-256 EC private key", &der, e))?;
                // Uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
                let point = pair.public_key().as_ref();
                if point.len() != 65 || point[0] != 0x04 {
                    return Err("unexpected P-256 public key encoding".to_string());
                }
                let (x, y) = (b64(&point[1..33]), b64(&point[33..65]));
                let kid = ec_thumbprint("P-256", &x, &y);
                let params = serde_json::json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y });
                (EncodingKey::from_ec_der(&der), params, kid)
            }
            (Alg::ES256, PemKey::Sec1) => {
                return Err(
                    "ES256 needs a PKCS#8 key (BEGIN PRIVATE KEY), but this is a SEC1 \
                            EC key (BEGIN EC PRIVATE KEY): convert it with \
                            `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY8`"
                        .to_string(),
                );
            }
            (Alg::ES256, PemKey::Pkcs1(_)) => {
                return Err(
                    "ES256 needs a P-256 EC private key, but the PEM holds an RSA key".into(),
                );
            }
            (Alg::EdDSA, PemKey::Pkcs8(der)) => {
                // `maybe_unchecked` accepts both PKCS#8 v1 (openssl) and v2
                // (ring/rcgen, with the public key embedded).
                let pair = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                    .map_err(|e| pkcs8_error(alg, "an Ed25519 private key", &der, e))?;
                let x = b64(pair.public_key().as_ref());
                let kid = okp_thumbprint("Ed25519", &x);
                let params = serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": x });
                (EncodingKey::from_ed_der(&der), params, kid)
            }
            (Alg::EdDSA, PemKey::Pkcs1(_)) => {
                return Err(
                    "EdDSA needs an Ed25519 private key, but the PEM holds an RSA key".into(),
                );
            }
            (Alg::EdDSA, PemKey::Sec1) => {
                return Err(
                    "EdDSA needs an Ed25519 private key, but the PEM holds an EC key".into(),
                );
            }
        };
        let mut jwk = jwk_params;
        if let Some(obj) = jwk.as_object_mut() {
            obj.insert("kid".into(), kid.clone().into());
            obj.insert("use".into(), "sig".into());
            obj.insert("alg".into(), alg.as_str().into());
        }
        let jwks = serde_json::to_vec(&serde_json::json!({ "keys": [jwk] }))
            .map_err(|e| format!("cannot serialise JWKS: {e}"))?;
        let mut signer = Self::build(alg, kid, encoding_key, issuer, audience, ttl, jwks)?;
        signer.jwk = Some(jwk);
        Ok(signer)
    }

    /// An HS256 signer with a shared secret of at least 32 bytes. The JWKS is
    /// empty: a shared secret is never published.
    pub fn from_secret(
        secret: &[u8],
        issuer: String,
        audience: String,
        ttl: Duration,
    ) -> Result<Self, String> {
        if secret.len() < MIN_HMAC_SECRET_LEN {
            return Err(format!(
                "HS256 secret is {} bytes; it must be at least {MIN_HMAC_SECRET_LEN} bytes",
                secret.len()
            ));
        }
        // A hash prefix identifies the key for rotation without revealing
        // anything usable about the secret (8 bytes of SHA-256).
        let kid = format!("hs-{}", b64(&sha256(secret)[..8]));
        Self::build(
            Alg::HS256,
            kid,
            EncodingKey::from_secret(secret),
            issuer,
            audience,
            ttl,
            br#"{"keys":[]}"#.to_vec(),
        )
    }

    fn build(
        alg: Alg,
        kid: String,
        key: EncodingKey,
        issuer: String,
        audience: String,
        ttl: Duration,
        jwks: Vec<u8>,
    ) -> Result<Self, String> {
        let ttl_secs = ttl.as_secs();
        if ttl_secs == 0 {
            return Err("JWT lifetime must be at least one second".to_string());
        }
        let mut header = Header::new(jsonwebtoken_alg(alg));
        header.kid = Some(kid.clone());
        header.typ = Some("JWT".to_string());
        let signer = Self {
            alg,
            kid,
            header,
            key,
            issuer,
            audience,
            ttl_secs,
            jwks,
            jwk: None,
        };
        // Sign once now so a key that ring rejects at signing time fails at
        // start-up, not on the first request.
        signer.try_sign("probe", None, "probe", "probe", 0)?;
        Ok(signer)
    }

    /// The key id: RFC 7638 thumbprint, or `hs-...` for HS256.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The public key as a JWK with `kid`, `use` and `alg`; `None` for HS256.
    pub fn jwk(&self) -> Option<&serde_json::Value> {
        self.jwk.as_ref()
    }

    /// How long the tokens it signs live, in seconds.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// The JWKS document (`{"keys":[...]}`), `{"keys":[]}` for HS256.
    pub fn jwks_json(&self) -> &[u8] {
        &self.jwks
    }

    /// Signs a token for this identity at `now` (unix seconds): `iat = nbf =
    /// now`, `exp = now + ttl`, a random 128-bit `jti`. Returns (token, exp).
    pub fn try_sign(
        &self,
        openid: &str,
        unionid: Option<&str>,
        appid: &str,
        scope: &str,
        now: u64,
    ) -> Result<(String, u64), String> {
        let exp = now.saturating_add(self.ttl_secs);
        let mut jti_bytes = [0u8; 16];
        // thread_rng is a CSPRNG: jti values are unpredictable and unique.
        rand::thread_rng().fill_bytes(&mut jti_bytes);
        let jti = b64(&jti_bytes);
        let claims = Claims {
            iss: &self.issuer,
            aud: &self.audience,
            sub: openid,
            openid,
            unionid,
            appid,
            scope,
            iat: now,
            nbf: now,
            exp,
            jti: &jti,
        };
        let token = jsonwebtoken::encode(&self.header, &claims, &self.key)
            .map_err(|e| format!("JWT signing failed: {e}"))?;
        Ok((token, exp))
    }

    /// Like [`try_sign`](Self::try_sign) but infallible in signature: the key
    /// was test-signed at construction, so failure would mean the OS random
    /// generator broke. In that case the error is logged and the token is
    /// empty (upstreams must reject an empty token).
    pub fn sign(
        &self,
        openid: &str,
        unionid: Option<&str>,
        appid: &str,
        scope: &str,
        now: u64,
    ) -> (String, u64) {
        match self.try_sign(openid, unionid, appid, scope, now) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, kid = %self.kid, "JWT signing failed");
                (String::new(), now.saturating_add(self.ttl_secs))
            }
        }
    }
}

/// Fresh PKCS#8 PEM private key for ES256 (P-256) or EdDSA (Ed25519), for
/// the demo and tests. RSA keys can't be generated here (neither ring nor
/// rcgen can): use `openssl genpkey -algorithm RSA`.
pub fn generate_pem(alg: Alg) -> Result<String, String> {
    let rcgen_alg = match alg {
        Alg::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        Alg::EdDSA => &rcgen::PKCS_ED25519,
        Alg::RS256 => {
            return Err("cannot generate RSA keys: use \
                        `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`"
                .to_string())
        }
        Alg::HS256 => return Err("HS256 uses a shared secret, not a key pair".to_string()),
    };
    rcgen::KeyPair::generate_for(rcgen_alg)
        .map(|kp| kp.serialize_pem())
        .map_err(|e| format!("key generation failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};
    use std::collections::BTreeMap;
    use std::time::{SystemTime, UNIX_EPOCH};

    const RSA_PKCS8: &[u8] = include_bytes!("../../tests/fixtures/jwt/rsa-test-only.pem");
    const RSA_PKCS1: &[u8] = include_bytes!("../../tests/fixtures/jwt/rsa-pkcs1-test-only.pem");
    const EC_SEC1: &[u8] = include_bytes!("../../tests/fixtures/jwt/ec-sec1-test-only.pem");
    /// Thumbprint of the RSA fixture computed independently (Python hashlib
    /// over the RFC 7638 JSON of `openssl rsa -modulus`).
    const RSA_FIXTURE_KID: &str = "q9VkW7DqvEpSI1cteF_94MmeVbHkdbyPh9VG9vdPXO0";
    const TTL: Duration = Duration::from_secs(300);

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn signer(alg: Alg, pem: &[u8]) -> JwtSigner {
        JwtSigner::from_pem(
            alg,
            pem,
            "https://gw.example".into(),
            "upstream".into(),
            TTL,
        )
        .unwrap()
    }

    fn validation(alg: Alg) -> Validation {
        let mut v = Validation::new(jsonwebtoken_alg(alg));
        v.set_issuer(&["https://gw.example"]);
        v.set_audience(&["upstream"]);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        v.leeway = 0;
        v
    }

    /// Verifies `token` with a key taken from the signer's own JWKS,
    /// looked up by the token header's kid; returns the claims.
    fn verify_with_jwks(
        s: &JwtSigner,
        token: &str,
    ) -> jsonwebtoken::errors::Result<serde_json::Value> {
        let set: JwkSet = serde_json::from_slice(s.jwks_json()).unwrap();
        assert_eq!(set.keys.len(), 1);
        let header = decode_header(token)?;
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let kid = header.kid.expect("kid in header");
        let jwk = set.find(&kid).expect("header kid is in the JWKS");
        let key = DecodingKey::from_jwk(jwk)?;
        decode::<serde_json::Value>(token, &key, &validation(s.alg())).map(|d| d.claims)
    }

    fn check_claims(c: &serde_json::Value, t: u64, unionid: Option<&str>) {
        assert_eq!(c["iss"], "https://gw.example");
        assert_eq!(c["aud"], "upstream");
        assert_eq!(c["sub"], "oOPENID123");
        assert_eq!(c["openid"], "oOPENID123");
        assert_eq!(c["appid"], "wxAPPID");
        assert_eq!(c["scope"], "snsapi_base");
        assert_eq!(c["iat"], t);
        assert_eq!(c["nbf"], t);
        assert_eq!(c["exp"], t + TTL.as_secs());
        match unionid {
            Some(u) => assert_eq!(c["unionid"], u),
            None => assert!(c.get("unionid").is_none(), "unionid omitted: {c}"),
        }
        let jti = c["jti"].as_str().unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(jti).unwrap().len(), 16);
    }

    fn round_trip(s: &JwtSigner) {
        let t = now();
        for unionid in [Some("uUNION"), None] {
            let (token, exp) = s.sign("oOPENID123", unionid, "wxAPPID", "snsapi_base", t);
            assert_eq!(exp, t + TTL.as_secs());
            let claims = verify_with_jwks(s, &token).unwrap();
            check_claims(&claims, t, unionid);
            assert_eq!(decode_header(&token).unwrap().kid.as_deref(), Some(s.kid()));
            assert_eq!(
                decode_header(&token).unwrap().alg,
                jsonwebtoken_alg(s.alg())
            );
        }
        // Fresh jti each time.
        let (a, _) = s.sign("o", None, "a", "s", t);
        let (b, _) = s.sign("o", None, "a", "s", t);
        assert_ne!(a, b);
        // Expired tokens fail validation.
        let (old, _) = s.sign("o", None, "a", "s", t - 2 * TTL.as_secs());
        let err = verify_with_jwks(s, &old).unwrap_err();
        assert_eq!(
            *err.kind(),
            jsonwebtoken::errors::ErrorKind::ExpiredSignature
        );
        // Not yet valid.
        let (future, _) = s.sign("o", None, "a", "s", t + 100);
        let err = verify_with_jwks(s, &future).unwrap_err();
        assert_eq!(
            *err.kind(),
            jsonwebtoken::errors::ErrorKind::ImmatureSignature
        );
    }

    /// Recomputes the RFC 7638 thumbprint from the published JWK with
    /// serde_json (a BTreeMap serialises members sorted, compact).
    fn independent_thumbprint(s: &JwtSigner) -> String {
        let doc: serde_json::Value = serde_json::from_slice(s.jwks_json()).unwrap();
        let jwk = &doc["keys"][0];
        let required: &[&str] = match jwk["kty"].as_str().unwrap() {
            "RSA" => &["e", "kty", "n"],
            "EC" => &["crv", "kty", "x", "y"],
            "OKP" => &["crv", "kty", "x"],
            other => panic!("unexpected kty {other}"),
        };
        let m: BTreeMap<&str, &serde_json::Value> =
            required.iter().map(|k| (*k, &jwk[*k])).collect();
        let canonical = serde_json::to_string(&m).unwrap();
        assert!(!canonical.contains("null"), "{canonical}");
        b64(&sha256(canonical.as_bytes()))
    }

    fn check_jwks_shape(s: &JwtSigner, kty: &str) {
        let doc: serde_json::Value = serde_json::from_slice(s.jwks_json()).unwrap();
        let jwk = &doc["keys"][0];
        assert_eq!(jwk["kty"], kty);
        assert_eq!(jwk["kid"], s.kid());
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["alg"], s.alg().as_str());
        assert!(jwk.get("d").is_none(), "no private members");
        assert_eq!(independent_thumbprint(s), s.kid());
    }

    #[test]
    fn es256() {
        let pem = generate_pem(Alg::ES256).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let s = signer(Alg::ES256, pem.as_bytes());
        check_jwks_shape(&s, "EC");
        let doc: serde_json::Value = serde_json::from_slice(s.jwks_json()).unwrap();
        assert_eq!(doc["keys"][0]["crv"], "P-256");
        round_trip(&s);
    }

    #[test]
    fn eddsa() {
        let pem = generate_pem(Alg::EdDSA).unwrap();
        let s = signer(Alg::EdDSA, pem.as_bytes());
        check_jwks_shape(&s, "OKP");
        let doc: serde_json::Value = serde_json::from_slice(s.jwks_json()).unwrap();
        assert_eq!(doc["keys"][0]["crv"], "Ed25519");
        round_trip(&s);
    }

    #[test]
    fn rs256_pkcs8_and_pkcs1() {
        let s8 = signer(Alg::RS256, RSA_PKCS8);
        let s1 = signer(Alg::RS256, RSA_PKCS1);
        check_jwks_shape(&s8, "RSA");
        check_jwks_shape(&s1, "RSA");
        assert_eq!(s8.kid(), RSA_FIXTURE_KID);
        assert_eq!(s1.kid(), RSA_FIXTURE_KID);
        assert_eq!(s8.jwks_json(), s1.jwks_json());
        let doc: serde_json::Value = serde_json::from_slice(s8.jwks_json()).unwrap();
        assert_eq!(doc["keys"][0]["e"], "AQAB");
        round_trip(&s8);
        round_trip(&s1);
    }

    #[test]
    fn hs256() {
        let secret = b"0123456789abcdef0123456789abcdef-hs";
        let s = JwtSigner::from_secret(secret, "https://gw.example".into(), "upstream".into(), TTL)
            .unwrap();
        assert_eq!(s.alg(), Alg::HS256);
        assert_eq!(s.jwks_json(), br#"{"keys":[]}"#);
        assert!(s.kid().starts_with("hs-"));
        assert_eq!(s.kid().len(), 3 + 11);
        assert_eq!(s.kid(), format!("hs-{}", b64(&sha256(secret)[..8])));
        let t = now();
        let (token, _) = s.sign("oOPENID123", Some("uU"), "wxAPPID", "snsapi_base", t);
        let header = decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(s.kid()));
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let claims = decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_secret(secret),
            &validation(Alg::HS256),
        )
        .unwrap()
        .claims;
        check_claims(&claims, t, Some("uU"));
        // Another secret does not verify it.
        assert!(decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_secret(&[7u8; 32]),
            &validation(Alg::HS256),
        )
        .is_err());
        assert!(JwtSigner::from_secret(&[1u8; 31], "i".into(), "a".into(), TTL).is_err());
    }

    #[test]
    fn other_keys_do_not_verify() {
        let a = signer(Alg::ES256, generate_pem(Alg::ES256).unwrap().as_bytes());
        let b = signer(Alg::ES256, generate_pem(Alg::ES256).unwrap().as_bytes());
        assert_ne!(a.kid(), b.kid());
        let (token, _) = a.sign("o", None, "a", "s", now());
        // Re-label the token's key with b's JWKS: signature must fail.
        let set: JwkSet = serde_json::from_slice(b.jwks_json()).unwrap();
        let key = DecodingKey::from_jwk(&set.keys[0]).unwrap();
        let err = decode::<serde_json::Value>(&token, &key, &validation(Alg::ES256)).unwrap_err();
        assert_eq!(
            *err.kind(),
            jsonwebtoken::errors::ErrorKind::InvalidSignature
        );
    }

    #[test]
    fn rfc7638_test_vector() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        assert_eq!(
            rsa_thumbprint(n, "AQAB"),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    fn err(alg: Alg, pem: &[u8]) -> String {
        JwtSigner::from_pem(alg, pem, "i".into(), "a".into(), TTL).unwrap_err()
    }

    #[test]
    fn wrong_key_types_are_explained() {
        let ec = generate_pem(Alg::ES256).unwrap();
        let ed = generate_pem(Alg::EdDSA).unwrap();

        let e = err(Alg::ES256, RSA_PKCS8);
        assert!(e.contains("ES256") && e.contains("RSA"), "{e}");
        let e = err(Alg::ES256, RSA_PKCS1);
        assert!(e.contains("RSA"), "{e}");
        let e = err(Alg::ES256, ed.as_bytes());
        assert!(e.contains("Ed25519"), "{e}");
        let e = err(Alg::ES256, EC_SEC1);
        assert!(e.contains("PKCS#8") && e.contains("SEC1"), "{e}");

        let e = err(Alg::RS256, ec.as_bytes());
        assert!(e.contains("RS256") && e.contains("P-256"), "{e}");
        let e = err(Alg::RS256, EC_SEC1);
        assert!(e.contains("EC key"), "{e}");
        let e = err(Alg::EdDSA, ec.as_bytes());
        assert!(e.contains("EdDSA") && e.contains("P-256"), "{e}");
        let e = err(Alg::EdDSA, RSA_PKCS8);
        assert!(e.contains("RSA"), "{e}");
        let e = err(Alg::HS256, ec.as_bytes());
        assert!(e.contains("shared secret"), "{e}");
    }

    #[test]
    fn malformed_pems_are_explained() {
        let e = err(Alg::ES256, b"hello, not a pem");
        assert!(e.contains("not a PEM"), "{e}");
        let e = err(Alg::ES256, b"");
        assert!(e.contains("not a PEM"), "{e}");
        let cert = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let e = err(Alg::RS256, cert);
        assert!(e.contains("certificate"), "{e}");
        let enc =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let e = err(Alg::RS256, enc);
        assert!(e.contains("encrypted"), "{e}");
        let broken = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let e = err(Alg::ES256, broken);
        assert!(e.contains("invalid"), "{e}");
        let bad_b64 = b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n";
        assert!(JwtSigner::from_pem(Alg::EdDSA, bad_b64, "i".into(), "a".into(), TTL).is_err());
    }

    #[test]
    fn der_walker_is_total() {
        assert!(der_tlv(&[]).is_none());
        assert!(der_tlv(&[0x30]).is_none());
        assert!(der_tlv(&[0x30, 0x85, 1, 2, 3, 4, 5]).is_none());
        assert!(der_tlv(&[0x30, 0x82, 0xff, 0xff]).is_none());
        assert_eq!(
            der_tlv(&[0x04, 0x01, 0xaa, 0xbb]),
            Some((0x04, &[0xaa][..], &[0xbb][..]))
        );
        assert!(pkcs8_inner_key(&[0x30, 0x00]).is_none());
    }

    #[test]
    fn alg_names_and_misc() {
        for a in [Alg::HS256, Alg::RS256, Alg::ES256, Alg::EdDSA] {
            assert_eq!(a.as_str().parse::<Alg>().unwrap(), a);
            assert_eq!(a.to_string(), a.as_str());
        }
        assert!("hs256".parse::<Alg>().is_err());
        assert!("none".parse::<Alg>().is_err());
        assert!(generate_pem(Alg::RS256).is_err());
        assert!(generate_pem(Alg::HS256).is_err());
        assert!(
            JwtSigner::from_secret(&[1u8; 32], "i".into(), "a".into(), Duration::ZERO).is_err()
        );
    }

    #[test]
    fn debug_is_redacted() {
        let secret = b"TOPSECRET-TOPSECRET-TOPSECRET-TOPSECRET";
        let s = JwtSigner::from_secret(secret, "i".into(), "a".into(), TTL).unwrap();
        let dbg = format!("{s:?}");
        assert!(dbg.contains("<redacted>"), "{dbg}");
        assert!(!dbg.contains("TOPSECRET"), "{dbg}");
        let pem = generate_pem(Alg::EdDSA).unwrap();
        let s = signer(Alg::EdDSA, pem.as_bytes());
        let dbg = format!("{s:?}");
        let body: String = pem.lines().nth(1).unwrap().chars().take(20).collect();
        assert!(!dbg.contains(&body), "{dbg}");
    }
}
