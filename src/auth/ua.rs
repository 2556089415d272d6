//! Client detection from the User-Agent: WeChat, WeCom (企业微信), a
//! mini-program web-view, or anything else. Used to decide between starting
//! the silent WeChat login and showing an "open in WeChat" page.

/// Which client sent the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// The WeChat in-app browser (mobile or desktop WeChat).
    WeChat,
    /// WeCom. Its UA *also* contains `MicroMessenger`, so it is checked first.
    WeCom,
    /// A mini-program `web-view` (inside WeChat; also says `MicroMessenger`).
    MiniProgram,
    Other,
}

/// ASCII case-insensitive substring test without allocating (the UA is
/// client-controlled and can be long).
fn contains_ci(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// Classifies a User-Agent: without `MicroMessenger` it is no WeChat client
/// (WeCom and mini-program web-views say it too, reference §9); with it,
/// `wxwork` means WeCom, then `miniProgram` a mini-program web-view, else
/// WeChat. Case-insensitive. Note that a UA is a claim, not proof: this only
/// picks the user experience, never grants access.
pub fn classify(user_agent: &str) -> ClientKind {
    // A marker alone (fuzzing found "... miniProgram") must not start a login
    // that WeChat's authorize page refuses outside its app.
    if !contains_ci(user_agent, "micromessenger") {
        ClientKind::Other
    } else if contains_ci(user_agent, "wxwork") {
        ClientKind::WeCom
    } else if contains_ci(user_agent, "miniprogram") {
        ClientKind::MiniProgram
    } else {
        ClientKind::WeChat
    }
}

/// Whether to treat the client as WeChat (and start WeChat's login): WeChat
/// and mini-program web-views always, WeCom only when `allow_wecom` (Official
/// Account authorisation reportedly does not work inside WeCom).
pub fn is_wechat(ua: &str, allow_wecom: bool) -> bool {
    match classify(ua) {
        ClientKind::WeChat | ClientKind::MiniProgram => true,
        ClientKind::WeCom => allow_wecom,
        ClientKind::Other => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.59(0x18003b26) NetType/4G Language/zh_CN";
    const ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; V2309A Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/130.0.6723.103 Mobile Safari/537.36 XWEB/1340075 MMWEBSDK/20250201 MMWEBID/7690 MicroMessenger/8.0.58.2841(0x28003A3C) WeChat/arm64 Weixin NetType/WIFI Language/zh_CN ABI/arm64";
    const WECOM: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 10_2 like Mac OS X) AppleWebKit/602.3.12 (KHTML, like Gecko) Mobile/14C92 wxwork/2.4.2 MicroMessenger/6.3.22 Language/zh";
    const MINI: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 11_2 like Mac OS X) AppleWebKit/604.4.7 (KHTML, like Gecko) Mobile/15C153 MicroMessenger/6.6.1.1220(0x26060135) NetType/4G Language/zh_CN miniProgram";
    const WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/81.0.4044.138 Safari/537.36 NetType/WIFI MicroMessenger/7.0.20.1781(0x6700143b) WindowsWechat(0x63090a13) XWEB/8555 Flue";
    const MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) MicroMessenger/6.8.0(0x16080000) MacWechat/3.3(0x13030013) NetType/WIFI WindowsWechat";
    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const SAFARI: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Safari/605.1.15";

    #[test]
    fn reference_examples() {
        assert_eq!(classify(IOS), ClientKind::WeChat);
        assert_eq!(classify(ANDROID), ClientKind::WeChat);
        assert_eq!(classify(WECOM), ClientKind::WeCom);
        assert_eq!(classify(MINI), ClientKind::MiniProgram);
        assert_eq!(classify(WINDOWS), ClientKind::WeChat);
        assert_eq!(classify(MAC), ClientKind::WeChat);
        assert_eq!(classify(CHROME), ClientKind::Other);
        assert_eq!(classify(SAFARI), ClientKind::Other);
    }

    #[test]
    fn case_insensitive_and_edge_inputs() {
        assert_eq!(classify("foo MICROMESSENGER/8.0"), ClientKind::WeChat);
        assert_eq!(classify("WXWORK/4.1 micromessenger/8"), ClientKind::WeCom);
        assert_eq!(
            classify("micromessenger MINIPROGRAM"),
            ClientKind::MiniProgram
        );
        assert_eq!(classify(""), ClientKind::Other);
        assert_eq!(classify("Micro"), ClientKind::Other);
        assert_eq!(classify("漢字MicroMessenger漢字"), ClientKind::WeChat);
        assert_eq!(classify(&"a".repeat(100_000)), ClientKind::Other);
    }

    /// Found by fuzzing (fuzz/artifacts/user_agent/): a UA saying `miniProgram` or `wxwork`
    /// without `MicroMessenger` is no WeChat client (every real one says it), so it must get
    /// the "open in WeChat" page, not a login WeChat would refuse outside its app.
    #[test]
    fn markers_without_micromessenger_are_other() {
        for ua in [
            "Mozilla/5.0 (iPhone; CPU iPhone OS 11_2 like Mac OS X) NetType/4G miniProgram",
            "Mozilla/5.0 (Windows NT 10.0) wxwork/4.1.0",
            "miniprogram wxwork",
        ] {
            assert_eq!(classify(ua), ClientKind::Other, "{ua}");
            assert!(!is_wechat(ua, true), "{ua}");
            assert!(!is_wechat(ua, false), "{ua}");
        }
    }

    #[test]
    fn is_wechat_policy() {
        for ua in [IOS, ANDROID, MINI, WINDOWS, MAC] {
            assert!(is_wechat(ua, false), "{ua}");
            assert!(is_wechat(ua, true), "{ua}");
        }
        assert!(!is_wechat(WECOM, false));
        assert!(is_wechat(WECOM, true));
        for ua in [CHROME, SAFARI, ""] {
            assert!(!is_wechat(ua, true), "{ua}");
        }
    }
}
