//! Encrypted, authenticated cookie values (AES-256-GCM via the `cookie`
//! crate's private jar) with key rotation, the session payload they carry, and
//! parsing of the master secrets they are derived from.

use cookie::{Cookie, CookieJar, Key};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Longest sealed value `open` will even try to decrypt. Browsers cap a cookie
/// at about 4096 bytes, so anything longer is not one of ours; refusing it
/// early bounds the work an attacker can make us do per request.
pub const MAX_SEALED_LEN: usize = 4096;

/// Minimum master secret length: `Key::derive_from` needs 32 bytes of input
/// keying material (and panics below that, so we must check first).
pub const MIN_SECRET_LEN: usize = 32;

/// The identity kept in the session cookie. Times are unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionData {
    #[serde(rename = "o")]
    pub openid: String,
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
    #[serde(rename = "a")]
    pub appid: String,
    #[serde(rename = "s")]
    pub scope: String,
    #[serde(rename = "i")]
    pub issued_at: u64,
    #[serde(rename = "e")]
    pub expires_at: u64,
}

impl SessionData {
    /// True when `now` lies in `[issued_at, expires_at)`. A session "issued"
    /// in the future is refused too: it can only come from a badly skewed
    /// clock, and honouring it would extend the session's life.
    pub fn is_valid_at(&self, now: u64) -> bool {
        self.issued_at <= now && now < self.expires_at
    }
}

/// Seals and opens cookie values. The first key seals; every key opens, so a
/// new secret can be rolled out while cookies sealed under the old one keep
/// working until they expire.
pub struct SessionCodec {
    /// Derived AEAD keys, current first. Never printed (see the Debug impl).
    keys: Vec<Key>,
}

impl std::fmt::Debug for SessionCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material must never reach logs: show only how many keys there are.
        f.debug_struct("SessionCodec")
            .field("keys", &format_args!("[{} redacted]", self.keys.len()))
            .finish()
    }
}

impl SessionCodec {
    /// `keys`: master secrets, the first is the current one (used to seal),
    /// the rest are older ones still accepted. Each must be >= 32 bytes.
    pub fn new(keys: &[Vec<u8>]) -> Result<Self, String> {
        if keys.is_empty() {
            return Err("at least one session secret is required".to_string());
        }
        let mut derived = Vec::with_capacity(keys.len());
        for (i, master) in keys.iter().enumerate() {
            if master.len() < MIN_SECRET_LEN {
                // Say which one, never what it is.
                return Err(format!(
                    "session secret #{} is {} bytes; it must be at least {MIN_SECRET_LEN} bytes",
                    i + 1,
                    master.len()
                ));
            }
            // HKDF-SHA256 expansion inside the cookie crate: the AEAD key is
            // never the raw secret, so the same secret can't be misused
            // elsewhere as an AES key.
            derived.push(Key::derive_from(master));
        }
        Ok(Self { keys: derived })
    }

    /// Seals `value` (as JSON) into a cookie value for the cookie named
    /// `name`. The name is the AEAD associated data, so a value sealed for
    /// one cookie (say the login state) cannot be replayed as another (the
    /// session). If `value` cannot be serialised (a programming error, e.g.
    /// a map with non-string keys) the result is a value that never opens.
    pub fn seal<T: Serialize>(&self, name: &str, value: &T) -> String {
        let json = match serde_json::to_string(value) {
            Ok(json) => json,
            Err(e) => {
                debug_assert!(false, "value for cookie {name} does not serialise: {e}");
                String::new()
            }
        };
        let mut jar = CookieJar::new();
        // `keys` is never empty (checked in `new`); the first one seals.
        jar.private_mut(&self.keys[0])
            .add(Cookie::new(name.to_owned(), json));
        jar.get(name)
            .map(|c| c.value().to_owned())
            .unwrap_or_default()
    }

    /// Opens a value sealed by `seal` for cookie `name`, trying the current
    /// key then each older one. `None` on any failure: tampered, sealed for
    /// another name or under an unknown key, not base64, too long, or JSON
    /// that is not a `T`. Callers treat all of these alike (no session), so
    /// no detail is returned that could help an attacker probe.
    pub fn open<T: DeserializeOwned>(&self, name: &str, sealed: &str) -> Option<T> {
        if sealed.is_empty() || sealed.len() > MAX_SEALED_LEN {
            return None;
        }
        let jar = CookieJar::new();
        for key in &self.keys {
            let cookie = Cookie::new(name.to_owned(), sealed.to_owned());
            // GCM authenticates before we look at the plaintext: a value
            // that decrypts under some key is one we sealed for this name.
            if let Some(plain) = jar.private(key).decrypt(cookie) {
                return serde_json::from_str(plain.value()).ok();
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_secret;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine as _;

    fn key(b: u8) -> Vec<u8> {
        vec![b; 32]
    }

    fn sample() -> SessionData {
        SessionData {
            openid: "oAbC-123_xyz".into(),
            unionid: Some("uNiOn".into()),
            appid: "wx1234567890abcdef".into(),
            scope: "snsapi_base".into(),
            issued_at: 1_700_000_000,
            expires_at: 1_700_086_400,
        }
    }

    #[test]
    fn round_trip() {
        let codec = SessionCodec::new(&[key(1)]).unwrap();
        let sealed = codec.seal("wxgate_session", &sample());
        assert!(!sealed.is_empty());
        assert!(!sealed.contains("oAbC"), "plaintext must not leak");
        let back: SessionData = codec.open("wxgate_session", &sealed).unwrap();
        assert_eq!(back, sample());

        let mut no_union = sample();
        no_union.unionid = None;
        let sealed = codec.seal("wxgate_session", &no_union);
        assert_eq!(
            codec.open::<SessionData>("wxgate_session", &sealed),
            Some(no_union)
        );
    }

    #[test]
    fn sealing_is_randomised() {
        let codec = SessionCodec::new(&[key(1)]).unwrap();
        let a = codec.seal("n", &sample());
        let b = codec.seal("n", &sample());
        assert_ne!(a, b, "fresh nonce per seal");
    }

    #[test]
    fn tampered_value_is_refused() {
        let codec = SessionCodec::new(&[key(1)]).unwrap();
        let sealed = codec.seal("s", &sample());
        let mut flipped = 0;
        for i in 0..sealed.len() {
            let mut bytes = sealed.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(bytes).unwrap();
            assert!(codec.open::<SessionData>("s", &t).is_none(), "index {i}");
            flipped += 1;
        }
        assert_eq!(flipped, sealed.len());
        // Truncation and extension too.
        assert!(codec
            .open::<SessionData>("s", &sealed[..sealed.len() - 4])
            .is_none());
        assert!(codec
            .open::<SessionData>("s", &format!("{sealed}AAAA"))
            .is_none());
    }

    #[test]
    fn wrong_name_is_refused() {
        let codec = SessionCodec::new(&[key(1)]).unwrap();
        let sealed = codec.seal("wxgate_state", &sample());
        assert!(codec
            .open::<SessionData>("wxgate_session", &sealed)
            .is_none());
        assert!(codec.open::<SessionData>("wxgate_state", &sealed).is_some());
    }

    #[test]
    fn rotation() {
        let old = SessionCodec::new(&[key(1)]).unwrap();
        let rotated = SessionCodec::new(&[key(2), key(1)]).unwrap();
        let stranger = SessionCodec::new(&[key(3)]).unwrap();

        let by_old = old.seal("s", &sample());
        assert_eq!(rotated.open::<SessionData>("s", &by_old), Some(sample()));

        // New seals use the current key: the old-only codec can't read them.
        let by_new = rotated.seal("s", &sample());
        assert!(old.open::<SessionData>("s", &by_new).is_none());
        assert_eq!(rotated.open::<SessionData>("s", &by_new), Some(sample()));

        let by_stranger = stranger.seal("s", &sample());
        assert!(rotated.open::<SessionData>("s", &by_stranger).is_none());
    }

    #[test]
    fn wrong_type_is_refused() {
        let codec = SessionCodec::new(&[key(1)]).unwrap();
        let sealed = codec.seal("s", &"just a string");
        assert!(codec.open::<SessionData>("s", &sealed).is_none());
        assert_eq!(
            codec.open::<String>("s", &sealed).as_deref(),
            Some("just a string")
        );
    }

    #[test]
    fn garbage_and_huge_inputs() {
        let codec = SessionCodec::new(&[key(1), key(2)]).unwrap();
        let cases = [
            String::new(),
            "=".into(),
            "!!!!".into(),
            "AAAA".into(),
            "A".repeat(40),
            "\u{0}\u{1}\u{ff}é漢字".into(),
            "A".repeat(MAX_SEALED_LEN + 1),
            "A".repeat(1 << 20),
        ];
        for c in &cases {
            assert!(codec.open::<SessionData>("s", c).is_none());
            assert!(codec.open::<serde_json::Value>("s", c).is_none());
        }
        // A genuine value padded past the limit is refused by length alone.
        let sealed = codec.seal("s", &"x".repeat(MAX_SEALED_LEN));
        assert!(sealed.len() > MAX_SEALED_LEN);
        assert!(codec.open::<String>("s", &sealed).is_none());
    }

    #[test]
    fn short_keys_are_errors() {
        assert!(SessionCodec::new(&[]).is_err());
        assert!(SessionCodec::new(&[vec![0; 31]]).is_err());
        let err = SessionCodec::new(&[key(1), vec![7; 8]]).unwrap_err();
        assert!(err.contains("#2"), "{err}");
    }

    #[test]
    fn debug_redacts_keys() {
        let codec = SessionCodec::new(&[b"super-secret-master-key-0123456789".to_vec()]).unwrap();
        let dbg = format!("{codec:?}");
        assert!(dbg.contains("redacted"), "{dbg}");
        assert!(!dbg.contains("super"), "{dbg}");
    }

    #[test]
    fn validity_window() {
        let s = sample();
        assert!(s.is_valid_at(s.issued_at));
        assert!(s.is_valid_at(s.expires_at - 1));
        assert!(!s.is_valid_at(s.expires_at));
        assert!(!s.is_valid_at(s.issued_at - 1));
    }

    #[test]
    fn parse_secret_variants() {
        let raw: Vec<u8> = (0u8..48).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
        for enc in [
            STANDARD.encode(&raw),
            STANDARD_NO_PAD.encode(&raw[..40]),
            URL_SAFE.encode(&raw[..35]),
            URL_SAFE_NO_PAD.encode(&raw[..33]),
        ] {
            let got = parse_secret(&enc).unwrap();
            assert!(raw.starts_with(&got), "{enc}");
            assert!(got.len() >= 32);
        }
        // Not base64 (has spaces and '!'): used raw.
        let text = "this is a long passphrase, really!!";
        assert_eq!(parse_secret(text).unwrap(), text.as_bytes());
        // Base64 of only 24 bytes but 32 chars long: used raw.
        let short_b64 = STANDARD.encode([9u8; 24]);
        assert_eq!(short_b64.len(), 32);
        assert_eq!(parse_secret(&short_b64).unwrap(), short_b64.as_bytes());
        // Too short either way.
        let err = parse_secret("short").unwrap_err();
        assert!(err.starts_with("must be at least 32 bytes"), "{err}");
        assert!(
            !err.contains("short"),
            "the error never echoes the secret: {err}"
        );
        assert!(parse_secret("").is_err());
    }
}
