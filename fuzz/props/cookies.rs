//! The property shared by the sealed-cookie targets (`session_cookie`, `state_cookie`):
//! AES-256-GCM through `SessionCodec`, with the cookie name as associated data.

use std::fmt::Debug;
use std::sync::OnceLock;

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Serialize;
use wxgate::auth::session::{SessionCodec, MAX_SEALED_LEN};

use super::Reader;

/// Every cookie purpose wxgate seals for (src/auth/mod.rs `Jar::purpose`).
pub const PURPOSES: [&str; 4] = [
    "wxgate_session",
    "wxgate_state",
    "wxgate_guard",
    "wxgate_snapshot",
];

/// Fixed master secrets: `current` seals, `old` still opens (rotation), `stranger` is a key
/// the gateway does not know. Seeds in the corpus were sealed under `stranger`.
pub struct Codecs {
    /// `[current, old]`, as a gateway mid-rotation.
    pub gateway: SessionCodec,
    /// `[old]`: the gateway before the rotation.
    pub old_only: SessionCodec,
    /// `[old, current]`: `current` only as an older key.
    pub swapped: SessionCodec,
    /// `[stranger]`.
    pub stranger: SessionCodec,
}

pub const CURRENT: [u8; 32] = [0x11; 32];
pub const OLD: [u8; 32] = [0x22; 32];
pub const STRANGER: [u8; 32] = [0x33; 32];

pub fn codecs() -> &'static Codecs {
    static C: OnceLock<Codecs> = OnceLock::new();
    C.get_or_init(|| {
        let new = |keys: &[[u8; 32]]| {
            let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
            SessionCodec::new(&keys).expect("32-byte keys")
        };
        Codecs {
            gateway: new(&[CURRENT, OLD]),
            old_only: new(&[OLD]),
            swapped: new(&[OLD, CURRENT]),
            stranger: new(&[STRANGER]),
        }
    })
}

/// The property, for a cookie named `name` carrying a `T` built from the input by `make`:
///
/// 1. Forgery: the input itself, as a cookie value, opens under no purpose and as no type
///    (`serde_json::Value` accepts any JSON, so this means "does not decrypt"). The fuzzer
///    cannot produce a valid GCM tag, so anything that opens is a forgery. No panic.
/// 2. Round trip: `open(seal(x)) == x` whenever the sealed value fits `MAX_SEALED_LEN`
///    (else it never opens); the sealed value is cookie-safe base64; it opens under the old
///    key position too (rotation), but not without the sealing key, nor under another
///    cookie name (the name is the associated data).
/// 3. Tampering: the sealed value changed by the input (flip, truncate, extend, swap) never
///    opens, unless the change left the same ciphertext bytes (same base64 decoding).
pub fn check<T>(data: &[u8], name: &str, make: impl Fn(&mut Reader) -> T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let c = codecs();

    // 1. Forgery.
    let raw = String::from_utf8_lossy(data);
    for purpose in PURPOSES {
        assert!(
            c.gateway.open::<serde_json::Value>(purpose, &raw).is_none(),
            "a fuzzer-made value opened as {purpose}: {raw:?}"
        );
    }

    // 2. Round trip.
    let mut r = Reader::new(data);
    let x = make(&mut r);
    let sealed = c.gateway.seal(name, &x);
    assert!(
        !sealed.is_empty()
            && sealed
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)),
        "sealed value is not plain base64: {sealed:?}"
    );
    let opened: Option<T> = c.gateway.open(name, &sealed);
    if sealed.len() <= MAX_SEALED_LEN {
        assert_eq!(opened.as_ref(), Some(&x), "open(seal(x)) != x");
        assert_eq!(c.swapped.open::<T>(name, &sealed).as_ref(), Some(&x));
    } else {
        assert!(opened.is_none(), "a value over MAX_SEALED_LEN opened");
    }
    assert!(c
        .old_only
        .open::<serde_json::Value>(name, &sealed)
        .is_none());
    assert!(c
        .stranger
        .open::<serde_json::Value>(name, &sealed)
        .is_none());
    for other in PURPOSES.iter().filter(|p| **p != name) {
        assert!(
            c.gateway
                .open::<serde_json::Value>(other, &sealed)
                .is_none(),
            "sealed for {name}, opened as {other}"
        );
    }

    // 3. Tampering.
    let mut t = sealed.clone().into_bytes();
    let at = usize::from(r.u16()) % t.len();
    let b = r.u8();
    match r.u8() % 4 {
        0 => t[at] ^= b.max(1),
        1 => t.truncate(at),
        2 => t.insert(at, b),
        _ => {
            let other = usize::from(b) % t.len();
            t.swap(at, other);
        }
    }
    let tampered = String::from_utf8_lossy(&t).into_owned();
    if tampered != sealed {
        if let Some(v) = c.gateway.open::<serde_json::Value>(name, &tampered) {
            let engine = &base64::engine::general_purpose::STANDARD;
            assert_eq!(
                engine.decode(&tampered).ok(),
                engine.decode(&sealed).ok(),
                "tampered value {tampered:?} opened as {v}"
            );
        }
    }
}
