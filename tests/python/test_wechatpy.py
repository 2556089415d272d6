"""Runs wechatpy, a WeChat client nobody here wrote, against the wxgate simulator.

Usage: python test_wechatpy.py SIM_URL APPID SECRET
Drives /connect/oauth2/authorize itself with a WeChat User-Agent (no redirect following),
takes the code from the Location header, then uses wechatpy's WeChatOAuth for the
snsapi_base and snsapi_userinfo exchanges, refresh, userinfo and sns/auth, and WeChatClient
for cgi-bin/token and cgi-bin/user/info. Exits non-zero on the first failed check.
"""

import json
import re
import sys
import urllib.parse

try:
    import requests
    from wechatpy import WeChatClient
    from wechatpy.exceptions import WeChatClientException, WeChatOAuthException
    from wechatpy.oauth import WeChatOAuth
except ImportError as exc:  # reported by tests/sim_wechatpy.rs as a failure
    print(f"wechatpy missing ({exc})", file=sys.stderr)
    sys.exit(3)

BASE, APPID, SECRET = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
CALLBACK = "http://localhost:8080/wx/callback"
UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
      "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.59(0x18003b26) NetType/4G Language/zh_CN")


class SimOAuth(WeChatOAuth):
    API_BASE_URL = BASE + "/"
    OAUTH_BASE_URL = BASE + "/connect/"


class SimClient(WeChatClient):
    API_BASE_URL = BASE + "/cgi-bin/"

    def fetch_access_token(self):
        # wechatpy hard-codes https://api.weixin.qq.com/cgi-bin/token here.
        return self._fetch_access_token(
            url=BASE + "/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
        )


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok -", what)


def world():
    return requests.get(BASE + "/_sim/world").json()


def ids(user):
    for u in world()["users"]:
        if u["name"] == user:
            return u["ids"][APPID]
    raise AssertionError("no user " + user)


def code_from(resp, state):
    check(resp.status_code == 302, f"authorize calls back with 302 (got {resp.status_code})")
    loc = resp.headers["Location"]
    check(loc.startswith(CALLBACK + "?"), "callback goes to redirect_uri: " + loc)
    q = urllib.parse.parse_qs(urllib.parse.urlparse(loc).query)
    check(q["state"] == [state], "state comes back unchanged")
    return q["code"][0]


def authorize(oauth, user, state):
    url = oauth.authorize_url
    check(url.endswith("#wechat_redirect"), "wechatpy appends #wechat_redirect")
    # requests, like a browser, never sends the fragment.
    resp = requests.get(url, headers={"User-Agent": UA}, cookies={"sim_user": user}, allow_redirects=False)
    if resp.status_code == 200 and "/_sim/consent" in resp.text:
        q = re.search(r'name="q" value="([^"]*)"', resp.text).group(1).replace("&amp;", "&")
        resp = requests.post(BASE + "/_sim/consent", data={"q": q, "user": user, "decision": "allow"},
                             headers={"User-Agent": UA}, allow_redirects=False)
    return code_from(resp, state)


def expect_error(fn, errcode, what):
    try:
        fn()
    except (WeChatOAuthException, WeChatClientException) as exc:
        check(exc.errcode == errcode, f"{what}: errcode {exc.errcode} == {errcode}")
        return
    raise AssertionError(what + ": no error raised")


def main():
    alice, bob = ids("alice"), ids("bob")

    # snsapi_base: silent, openid only, no unionid.
    base = SimOAuth(APPID, SECRET, CALLBACK, scope="snsapi_base", state="base1")
    code = authorize(base, "alice", "base1")
    res = base.fetch_access_token(code)
    check(res["openid"] == alice["openid"], "snsapi_base gives alice's openid")
    check(res["scope"] == "snsapi_base" and "unionid" not in res, "no unionid under snsapi_base")
    check(res["expires_in"] == 7200, "expires_in 7200")
    check(base.check_access_token() is True, "sns/auth accepts the token")
    expect_error(base.get_user_info, 48001, "sns/userinfo with a snsapi_base token")
    expect_error(lambda: base.fetch_access_token(code), 40163, "reusing a code")
    expect_error(lambda: SimOAuth(APPID, "wrong", CALLBACK).fetch_access_token(code), 40125, "wrong secret")

    # snsapi_userinfo for a non-follower: consent page, then unionid and profile.
    info = SimOAuth(APPID, SECRET, CALLBACK, scope="snsapi_userinfo", state="info1")
    res = info.fetch_access_token(authorize(info, "bob", "info1"))
    check(res["openid"] == bob["openid"], "snsapi_userinfo gives bob's openid")
    check(res.get("unionid") == bob["unionid"], "unionid under snsapi_userinfo on a bound account")
    user = info.get_user_info()
    check(user["nickname"] == "Bob" and user["unionid"] == bob["unionid"], "sns/userinfo profile")
    refreshed = info.refresh_access_token(res["refresh_token"])
    check(refreshed["access_token"] != res["access_token"], "refresh gives a new access_token")
    check(info.check_access_token() is True, "the refreshed token is valid")
    check(info.get_user_info()["openid"] == bob["openid"], "userinfo with the refreshed token")
    expect_error(lambda: info.check_access_token(openid=alice["openid"]), 40003, "sns/auth with another openid")

    # Global token and user/info: followers get unionid, non-followers subscribe 0 only.
    client = SimClient(APPID, SECRET)
    follower = client.user.get(alice["openid"])
    check(follower["subscribe"] == 1 and follower["unionid"] == alice["unionid"], "user/info for a follower")
    check(client.user.get(bob["openid"]) == {"subscribe": 0}, "user/info for a non-follower")

    # Time: two hours later the cached global token is expired (42001); wechatpy re-fetches.
    before = requests.get(BASE + "/_sim/stats").json().get("/cgi-bin/token", 0)
    requests.post(BASE + "/_sim/clock", data=json.dumps({"advance_secs": 7201}))
    check(client.user.get(alice["openid"])["subscribe"] == 1, "wechatpy recovers from 42001")
    after = requests.get(BASE + "/_sim/stats").json().get("/cgi-bin/token", 0)
    check(after == before + 1, "exactly one token re-fetch after expiry")
    expect_error(info.check_access_token, 42001, "expired sns token")
    print("wechatpy: all checks passed")


if __name__ == "__main__":
    main()
