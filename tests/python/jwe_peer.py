#!/usr/bin/env python3
"""An independent JOSE peer for the token-service dialect tests.

Encrypts and decrypts JWE compact serializations (alg "dir", enc "A256GCM")
with Python jwcrypto, so the Rust tests never check the server's JWE code
against itself.

    jwe_peer.py encrypt KEY   < plaintext.json   > token.jwe
    jwe_peer.py decrypt KEY   < token.jwe        > plaintext.json
    jwe_peer.py check                              (exit 0 if jwcrypto imports)
    jwe_peer.py serve                              (one JSON request per line)

KEY is the client's payload key, base64url without padding, as
`tessera client create` prints it. encrypt/decrypt read stdin whole and write
the result to stdout without a trailing newline. Exit codes: 0 ok, 1 the
operation failed (message on stderr), 2 usage, 3 jwcrypto is not installed.

`serve` answers each stdin line {"op": "encrypt"|"decrypt", "key": KEY,
"input": TEXT} with one line {"ok": true, "output": TEXT} or
{"ok": false, "error": TEXT}, so a test suite pays Python's start-up once.
"""

import json
import sys

HEADER = {"alg": "dir", "enc": "A256GCM"}


def encrypt(jwk, jwe, key, data):
    json.loads(data)  # the dialect's plaintexts are JSON
    token = jwe.JWE(data.encode("utf-8"), protected=json.dumps(HEADER))
    token.add_recipient(jwk.JWK(kty="oct", k=key))
    return token.serialize(compact=True)


def decrypt(jwk, jwe, key, text):
    token = jwe.JWE()
    # Only what the dialect allows; anything else is a failure.
    token.allowed_algs = ["dir", "A256GCM"]
    token.deserialize(text.strip(), key=jwk.JWK(kty="oct", k=key))
    header = json.loads(token.objects["protected"])
    if header.get("alg") != "dir" or header.get("enc") != "A256GCM":
        raise ValueError("unexpected JWE header %r" % header)
    return token.payload.decode("utf-8")


def serve(jwk, jwe):
    for line in sys.stdin:
        try:
            req = json.loads(line)
            op = {"encrypt": encrypt, "decrypt": decrypt}[req["op"]]
            answer = {"ok": True, "output": op(jwk, jwe, req["key"], req["input"])}
        except Exception as e:  # noqa: BLE001 - every failure is an answer
            answer = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


def main(argv):
    if len(argv) == 2 and argv[1] in ("check", "serve"):
        mods = _import()
        if not mods:
            return 3
        return serve(*mods) if argv[1] == "serve" else 0
    if len(argv) != 3 or argv[1] not in ("encrypt", "decrypt"):
        sys.stderr.write(__doc__)
        return 2
    mods = _import()
    if not mods:
        return 3
    op = {"encrypt": encrypt, "decrypt": decrypt}[argv[1]]
    try:
        out = op(*mods, argv[2], sys.stdin.buffer.read().decode("utf-8"))
    except Exception as e:  # noqa: BLE001 - report any failure as exit 1
        sys.stderr.write("jwe_peer: %s failed: %s: %s\n" % (argv[1], type(e).__name__, e))
        return 1
    sys.stdout.write(out)
    return 0


def _import():
    try:
        from jwcrypto import jwe, jwk
    except ImportError:
        sys.stderr.write(
            "jwe_peer: jwcrypto is not installed; "
            "run: python3 -m pip install -r tests/python/requirements.txt\n"
        )
        return None
    return jwk, jwe


if __name__ == "__main__":
    sys.exit(main(sys.argv))
