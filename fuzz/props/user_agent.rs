//! Target `user_agent`: client detection (src/auth/ua.rs). Property: no panic; `classify`
//! equals a plain reference implementation (ASCII-lowercase, then substring tests in the
//! module's order); and `is_wechat` is true only for a UA containing `MicroMessenger`
//! (any ASCII case): every WeChat client, WeCom and mini-program web-views included, says
//! it, so a UA without it is not WeChat and must get the "open in WeChat" page, not a login
//! that cannot finish. WeCom counts only with `allow_wecom`.

use wxgate::auth::ua::{classify, is_wechat, ClientKind};

/// The reference: what the module's doc says, written the obvious way.
pub fn expected(ua: &str) -> ClientKind {
    let lower = ua.to_ascii_lowercase();
    if !lower.contains("micromessenger") {
        ClientKind::Other
    } else if lower.contains("wxwork") {
        ClientKind::WeCom
    } else if lower.contains("miniprogram") {
        ClientKind::MiniProgram
    } else {
        ClientKind::WeChat
    }
}

pub fn check(data: &[u8]) {
    let ua = String::from_utf8_lossy(data);
    let kind = expected(&ua);
    assert_eq!(classify(&ua), kind, "classify({ua:?})");
    let says_it = ua.to_ascii_lowercase().contains("micromessenger");
    for allow_wecom in [false, true] {
        let yes = is_wechat(&ua, allow_wecom);
        assert!(
            !yes || says_it,
            "is_wechat({ua:?}, {allow_wecom}) without MicroMessenger"
        );
        let want = match kind {
            ClientKind::WeChat | ClientKind::MiniProgram => true,
            ClientKind::WeCom => allow_wecom,
            ClientKind::Other => false,
        };
        assert_eq!(yes, want, "is_wechat({ua:?}, {allow_wecom})");
    }
}
