#!/usr/bin/env python3
"""A DigiLocker OAuth 2.0 client built on authlib, run against Tessera.

Authorization code with PKCE (S256), the login step, the code exchange,
the user endpoint, a refresh, and authlib's RFC 7009 revocation; then the
tokens must be inactive at /oauth2/introspect and refused by the user
endpoint. Run by tests/dialect_digilocker.rs; exits non-zero on the first
failed check.

The login step is either the login application API (`--login admin`: the
admin token accepts the login challenge with user claims) or the built-in
login page driven with plain HTTP posts (`--login page`: the one-time code
is read from `--otp-url`, an endpoint the Rust test serves).
"""

import argparse
import json
import os
import sys
import time
import urllib.parse

# The test server speaks plain HTTP on loopback; authlib refuses that
# unless told otherwise.
os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")

try:
    import requests
    from authlib.common.security import generate_token
    from authlib.integrations.requests_client import OAuth2Session
except ImportError as e:  # the Rust test checks first; this is a fallback
    print(f"missing Python package: {e}", file=sys.stderr)
    sys.exit(3)

TIMEOUT = 15


def check(cond, what, detail=""):
    if not cond:
        print(f"FAILED: {what} {detail}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def query(url):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def login_with_admin_api(http, base, admin_token, challenge, subject, client_id):
    admin = {"Authorization": f"Bearer {admin_token}"}
    r = http.get(f"{base}/admin/login/{challenge}", headers=admin, timeout=TIMEOUT)
    check(r.status_code == 200, "pending login is readable", r.text)
    check(r.json()["client_id"] == client_id, "pending login names the client", r.text)
    claims = {
        "digilockerid": "8c0f0e6a-1a5b-4a59-9d2f-0a1c9e8b7d66",
        "name": "Asha Verma",
        "dob": "01011990",
        "gender": "F",
        "eaadhaar": "Y",
    }
    r = http.put(
        f"{base}/admin/login/{challenge}/accept",
        json={"subject": subject, "claims": claims},
        headers=admin,
        timeout=TIMEOUT,
    )
    check(r.status_code == 200, "login accepted", r.text)
    return r.json()["redirect_to"], claims


def fetch_otp(otp_url, identifier):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        r = requests.get(otp_url, params={"login": identifier}, timeout=TIMEOUT)
        if r.status_code == 200:
            return r.json()["otp"]
        time.sleep(0.1)
    check(False, "the one-time code was delivered to the webhook")


def login_with_page(http, login_url, otp_url, identifier):
    r = http.get(login_url, timeout=TIMEOUT)
    check(r.status_code == 200, "login page shown", r.status_code)
    challenge = query(login_url)["login_challenge"]
    page = urllib.parse.urljoin(login_url, "/login")
    r = http.post(
        page,
        data={"login_challenge": challenge, "identifier": identifier},
        timeout=TIMEOUT,
    )
    check(r.status_code == 200 and 'name="otp"' in r.text, "code form shown", r.status_code)
    otp = fetch_otp(otp_url, identifier)
    r = http.post(
        urllib.parse.urljoin(login_url, "/login/verify"),
        data={"login_challenge": challenge, "identifier": identifier, "otp": otp},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    check(r.status_code == 303, "correct code redirects (303)", r.status_code)
    return r.headers["Location"], {"login": identifier}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="Tessera base URL")
    ap.add_argument("--admin-token", required=True)
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--client-secret", required=True)
    ap.add_argument("--redirect-uri", required=True)
    ap.add_argument("--subject", default="asha@example.in")
    ap.add_argument("--login", choices=["admin", "page"], default="admin")
    ap.add_argument("--otp-url", help="GET ?login=<identifier> → {\"otp\": …}")
    args = ap.parse_args()
    base = args.base.rstrip("/")
    dl = f"{base}/public/oauth2/1"

    client = OAuth2Session(
        client_id=args.client_id,
        client_secret=args.client_secret,
        redirect_uri=args.redirect_uri,
        scope="openid",
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
        revocation_endpoint_auth_method="client_secret_basic",
    )
    verifier = generate_token(64)
    url, state = client.create_authorization_url(f"{dl}/authorize", code_verifier=verifier)
    check("code_challenge_method=S256" in url, "authlib sends an S256 challenge", url)

    http = requests.Session()
    r = http.get(url, allow_redirects=False, timeout=TIMEOUT)
    check(r.status_code == 302, "authorize redirects to the login URL", f"{r.status_code} {r.text}")
    login_url = r.headers["Location"]
    check(login_url.startswith(f"{base}/login?"), "the default login URL is the built-in page", login_url)
    challenge = query(login_url).get("login_challenge")
    check(bool(challenge), "login URL carries login_challenge", login_url)

    if args.login == "admin":
        redirect_to, claims = login_with_admin_api(
            http, base, args.admin_token, challenge, args.subject, args.client_id
        )
    else:
        check(bool(args.otp_url), "--otp-url is given for --login page")
        redirect_to, claims = login_with_page(http, login_url, args.otp_url, args.subject)
    check(redirect_to.startswith(args.redirect_uri + "?"), "back to the client's redirect URI", redirect_to)
    check(query(redirect_to).get("state") == state, "state comes back unchanged", redirect_to)

    # authlib checks `state` and sends the code, redirect_uri and code_verifier.
    token = client.fetch_token(
        f"{dl}/token",
        authorization_response=redirect_to,
        state=state,
        code_verifier=verifier,
    )
    check(token.get("token_type") == "Bearer", "token_type is Bearer", token)
    check(token.get("expires_in") == 3600, "expires_in is 3600", token)
    check(token.get("scope") == "openid", "scope is echoed", token)
    check(bool(token.get("refresh_token")), "a refresh token is issued", token)
    for k, v in claims.items():
        check(token.get(k) == v, f"user field {k} is in the token response", token)

    r = client.get(f"{dl}/user", timeout=TIMEOUT)
    check(r.status_code == 200, "user endpoint answers", r.text)
    user = r.json()
    check(user.get("sub") == args.subject, "user endpoint names the subject", user)
    for k, v in claims.items():
        check(user.get(k) == v, f"user field {k} at the user endpoint", user)

    first_refresh = token["refresh_token"]
    refreshed = client.refresh_token(f"{dl}/token", refresh_token=first_refresh)
    check(refreshed["refresh_token"] != first_refresh, "refresh rotates the refresh token", refreshed)
    check(refreshed["access_token"] != token["access_token"], "refresh issues a new access token")
    for k, v in claims.items():
        check(refreshed.get(k) == v, f"user field {k} survives the refresh", refreshed)

    r = client.revoke_token(f"{dl}/revoke", token=refreshed["access_token"], token_type_hint="access_token")
    check(r.status_code == 200, "authlib's revocation is accepted", f"{r.status_code} {r.text}")
    check(r.json() == {"revoked": True}, "revocation answers {\"revoked\": true}", r.text)

    auth = (args.client_id, args.client_secret)
    for name, t in [
        ("first access token", token["access_token"]),
        ("refreshed access token", refreshed["access_token"]),
        ("first refresh token", first_refresh),
        ("current refresh token", refreshed["refresh_token"]),
    ]:
        r = http.post(f"{base}/oauth2/introspect", data={"token": t}, auth=auth, timeout=TIMEOUT)
        check(r.status_code == 200 and r.json() == {"active": False}, f"{name} is inactive", r.text)

    r = http.get(
        f"{dl}/user",
        headers={"Authorization": f"Bearer {refreshed['access_token']}"},
        timeout=TIMEOUT,
    )
    check(r.status_code == 401, "user endpoint refuses the revoked token", r.status_code)
    check(
        r.json() == {"error": "invalid_token", "error_description": "The access token is invalid"},
        "the exact invalid_token body",
        r.text,
    )
    print(json.dumps({"ok": True, "subject": args.subject}))


if __name__ == "__main__":
    main()
