"""Verifies wxgate's forwarded JWTs with PyJWT, an implementation nobody here wrote.

Reads a JSON list of cases on stdin, each:
  {"alg", "token", "jwks", "secret" (HS256 only), "iss", "aud", "claims": {expected claims}}
For every case: finds the key by the token's `kid` in the JWKS (HS256: the shared secret),
verifies signature, iss, aud, exp, nbf and iat, compares the expected claims, and checks
that a tampered token and a wrong audience are refused. Exit 0 when all pass, 1 on a
failed check, 3 when PyJWT (or cryptography) is missing.
"""

import json
import sys

try:
    import jwt  # PyJWT
    from jwt import PyJWK
    import cryptography  # noqa: F401  (PyJWT needs it for RS256, ES256 and EdDSA)
except ImportError as e:  # pragma: no cover
    print(f"verify_jwt.py: {e}: pip install pyjwt cryptography", file=sys.stderr)
    sys.exit(3)

REQUIRED = ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def key_for(case):
    alg = case["alg"]
    header = jwt.get_unverified_header(case["token"])
    if header.get("alg") != alg:
        fail(f"{alg}: header alg is {header.get('alg')!r}")
    if header.get("typ") != "JWT":
        fail(f"{alg}: header typ is {header.get('typ')!r}")
    kid = header.get("kid")
    if not kid:
        fail(f"{alg}: no kid in the header")
    keys = case["jwks"].get("keys", [])
    if alg == "HS256":
        if keys:
            fail("HS256: the JWKS must not publish anything")
        return case["secret"].encode()
    matching = [k for k in keys if k.get("kid") == kid]
    if len(matching) != 1:
        fail(f"{alg}: {len(matching)} JWKS keys with kid {kid!r}")
    jwk = matching[0]
    for private in ("d", "p", "q", "dp", "dq", "qi", "k"):
        if private in jwk:
            fail(f"{alg}: JWKS key has private member {private!r}")
    return PyJWK(jwk, algorithm=alg).key


def check(case):
    alg = case["alg"]
    key = key_for(case)
    claims = jwt.decode(
        case["token"],
        key=key,
        algorithms=[alg],
        audience=case["aud"],
        issuer=case["iss"],
        options={"require": REQUIRED},
    )
    for name, want in case["claims"].items():
        got = claims.get(name)
        if got != want:
            fail(f"{alg}: claim {name} is {got!r}, expected {want!r}")
    if "unionid" not in case["claims"] and "unionid" in claims:
        fail(f"{alg}: unexpected unionid claim {claims['unionid']!r}")
    if claims["sub"] != claims["openid"]:
        fail(f"{alg}: sub != openid")
    if not (claims["iat"] == claims["nbf"] and claims["exp"] > claims["iat"]):
        fail(f"{alg}: times iat={claims['iat']} nbf={claims['nbf']} exp={claims['exp']}")

    # A flipped signature byte and a wrong audience must be refused.
    head, body, sig = case["token"].split(".")
    bad_sig = sig[:-2] + ("AA" if not sig.endswith("AA") else "BB")
    for label, token, aud in [
        ("tampered signature", f"{head}.{body}.{bad_sig}", case["aud"]),
        ("wrong audience", case["token"], "someone-else"),
    ]:
        try:
            jwt.decode(token, key=key, algorithms=[alg], audience=aud, issuer=case["iss"])
        except jwt.InvalidTokenError:
            continue
        fail(f"{alg}: {label} was accepted")
    # alg confusion: the token must not verify under another algorithm.
    try:
        jwt.decode(case["token"], key=key, algorithms=["none"], audience=case["aud"])
        fail(f"{alg}: accepted with algorithms=['none']")
    except jwt.InvalidTokenError:
        pass
    print(f"verified {alg} kid={jwt.get_unverified_header(case['token'])['kid']}")


def main():
    cases = json.load(sys.stdin)
    if not cases:
        fail("no cases")
    for case in cases:
        check(case)
    print(f"pyjwt: all {len(cases)} checks passed")


if __name__ == "__main__":
    main()
