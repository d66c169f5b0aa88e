"""hvac against Keyward's Vault Transit edge: the unmodified client, pointed at Keyward only through
VAULT_ADDR and VAULT_TOKEN (`hvac.Client()` without arguments).

Inputs (environment): VAULT_ADDR, VAULT_TOKEN, KEYWARD_DENIED_KEY (a key that exists but that the
token's principal has no grant for); optional: KEYWARD_VAULT_MOUNT (default "transit"),
KEYWARD_VAULT_NEW_KEY (the name of the key this script creates; default hvac-e2e-<random>, so it
can be granted beforehand), KEYWARD_DENIED_TOKEN (the token used for the KEYWARD_DENIED_KEY steps,
default VAULT_TOKEN), KEYWARD_NO_UPSERT=1 (encrypt under a missing key must be an error instead of
Vault's upsert).
Prints one line per step passed, then {"ok": true, "steps": N}; exits non-zero on the first
failed step, naming it.
"""
import base64
import binascii
import json
import os
import re
import sys
import uuid

import hvac
import requests
from hvac import exceptions as hx

STEPS = 0
MOUNT = os.environ.get("KEYWARD_VAULT_MOUNT") or "transit"
CT_RE = re.compile(r"^vault:v([0-9]+):([A-Za-z0-9+/]+={0,2})$")


class StepFailed(Exception):
    pass


def env(name):
    v = os.environ.get(name)
    if not v:
        raise StepFailed(f"setup: environment variable {name} is not set")
    return v


def check(step, cond, detail=""):
    if not cond:
        raise StepFailed(f"{step}: {detail}" if detail else step)


def passed(step):
    global STEPS
    STEPS += 1
    print(f"ok {STEPS} {step}", flush=True)


def b64(data):
    return base64.b64encode(data).decode()


def unb64(step, text):
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise StepFailed(f"{step}: {text!r} is not standard base64") from None


def call(step, fn, *args, **kw):
    """Calls fn, fails the step on any Vault error, returns the response."""
    try:
        return fn(*args, **kw)
    except hx.VaultError as e:
        raise StepFailed(f"{step}: unexpected {type(e).__name__}: {e} (errors {e.errors!r}, body {e.json!r})") from None


def data(step, resp):
    """The `data` of a 200 answer (hvac returns the parsed JSON for a 200 only)."""
    check(step, isinstance(resp, dict), f"expected a 200 with a JSON body, got {resp!r}")
    d = resp.get("data")
    check(step, isinstance(d, dict), f"no `data` object in {resp!r}")
    return d


def expect_error(step, classes, fn, *args, **kw):
    """Expects a Vault error of one of `classes` with a non-empty `errors` list (unless the
    answer is a batch body); returns the exception."""
    try:
        r = fn(*args, **kw)
    except hx.VaultError as e:
        names = "/".join(c.__name__ for c in classes)
        check(step, isinstance(e, classes), f"expected {names}, got {type(e).__name__}: {e}")
        return e
    raise StepFailed(f"{step}: expected an error, the call succeeded: {r!r}")


def with_errors(step, e, contains=None):
    check(step, isinstance(e.errors, list) and e.errors and all(isinstance(x, str) for x in e.errors),
          f"`errors` is not a non-empty list of strings: {e.errors!r} (body {e.json!r})")
    if contains:
        check(step, any(contains in x for x in e.errors), f"no error mentions {contains!r}: {e.errors!r}")


def ciphertext(step, ct, version):
    m = CT_RE.match(ct or "")
    check(step, m is not None, f"ciphertext {ct!r} is not vault:v<N>:<base64>")
    check(step, int(m.group(1)) == version, f"ciphertext {ct[:16]!r}... is not version {version}")
    unb64(step, m.group(2))
    return ct


def main():
    addr = env("VAULT_ADDR").rstrip("/")
    token = env("VAULT_TOKEN")
    denied_key = env("KEYWARD_DENIED_KEY")
    denied_token = os.environ.get("KEYWARD_DENIED_TOKEN") or token
    tag = uuid.uuid4().hex[:8]
    name = os.environ.get("KEYWARD_VAULT_NEW_KEY") or f"hvac-e2e-{tag}"
    missing = f"hvac-e2e-missing-{tag}"

    # No arguments: hvac must take the address and the token from VAULT_ADDR and VAULT_TOKEN.
    client = hvac.Client()
    check("setup", client.url.rstrip("/") == addr, f"hvac did not pick up VAULT_ADDR (url {client.url})")
    check("setup", client.token == token, "hvac did not pick up VAULT_TOKEN")
    t = client.secrets.transit
    hdr = {"X-Vault-Token": token}

    step = "is_authenticated (auth/token/lookup-self)"
    check(step, client.is_authenticated() is True, "is_authenticated() is False for VAULT_TOKEN")
    me = data(step, call(step, client.auth.token.lookup_self))
    check(step, isinstance(me.get("policies", []), list), f"policies {me.get('policies')!r}")
    passed(step)

    step = "sys/health"
    h = client.sys.read_health_status(method="GET")
    check(step, isinstance(h, dict), f"expected a 200 with JSON, got {h!r}")
    check(step, h.get("initialized") is True and h.get("sealed") is False, f"health {h!r}")
    check(step, isinstance(h.get("version"), str) and h["version"], f"version {h.get('version')!r}")
    passed(step)

    # --- keys ---
    step = f"create key {name}"
    r = call(step, t.create_key, name=name, mount_point=MOUNT)
    # Vault answers 204 without a body, OpenBao 2.x 200 with the key: hvac gives the Response or the dict.
    if isinstance(r, requests.Response):
        check(step, r.status_code == 204, f"HTTP {r.status_code}: {r.text!r}")
    else:
        check(step, data(step, r).get("latest_version") == 1, f"create answered {r!r}")
    passed(step)

    step = "read key"
    k = data(step, call(step, t.read_key, name=name, mount_point=MOUNT))
    check(step, k.get("type") == "aes256-gcm96", f"type {k.get('type')!r}")
    check(step, k.get("latest_version") == 1, f"latest_version {k.get('latest_version')!r}")
    check(step, k.get("min_decryption_version") == 1, f"min_decryption_version {k.get('min_decryption_version')!r}")
    check(step, k.get("deletion_allowed") is False, f"deletion_allowed {k.get('deletion_allowed')!r}")
    check(step, isinstance(k.get("keys"), dict) and list(k["keys"]) == ["1"],
          f"keys {k.get('keys')!r} is not a map with version 1 only")
    check(step, isinstance(k["keys"]["1"], int) and not isinstance(k["keys"]["1"], bool),
          f"keys['1'] {k['keys']['1']!r} is not an integer (creation time)")
    check(step, k.get("name", name) == name, f"name {k.get('name')!r}")
    check(step, k.get("supports_encryption", True) is True and k.get("supports_decryption", True) is True,
          f"supports_encryption/decryption {k.get('supports_encryption')!r}/{k.get('supports_decryption')!r}")
    passed(step)

    step = "list keys (LIST keys)"
    listed = data(step, call(step, t.list_keys, mount_point=MOUNT)).get("keys")
    check(step, isinstance(listed, list) and name in listed, f"{name} not in {listed!r}")
    passed(step)

    e = expect_error("read an unknown key -> 404", (hx.InvalidPath,), t.read_key, name=missing, mount_point=MOUNT)
    passed("read an unknown key -> 404")

    # --- encrypt / decrypt ---
    step = "encrypt/decrypt"
    pt = os.urandom(48)
    enc = data(step, call(step, t.encrypt_data, name=name, plaintext=b64(pt), mount_point=MOUNT))
    ct1 = ciphertext(step, enc.get("ciphertext"), 1)
    check(step, enc.get("key_version", 1) == 1, f"key_version {enc.get('key_version')!r}")
    dec = data(step, call(step, t.decrypt_data, name=name, ciphertext=ct1, mount_point=MOUNT))
    check(step, unb64(step, dec.get("plaintext")) == pt, "decrypt returned another plaintext")
    passed(step)

    step = "encrypt/decrypt with associated_data"
    ad = b64(b"tenant=t1;purpose=keyward-e2e")
    ad_pt = os.urandom(40)
    enc = data(step, call(step, t.encrypt_data, name=name, plaintext=b64(ad_pt), associated_data=ad,
                          mount_point=MOUNT))
    ad_ct = ciphertext(step, enc.get("ciphertext"), 1)
    dec = data(step, call(step, t.decrypt_data, name=name, ciphertext=ad_ct, associated_data=ad,
                          mount_point=MOUNT))
    check(step, unb64(step, dec.get("plaintext")) == ad_pt, "decrypt returned another plaintext")
    passed(step)

    step = "decrypt with a wrong associated_data -> 400"
    e = expect_error(step, (hx.InvalidRequest,), t.decrypt_data, name=name, ciphertext=ad_ct,
                     associated_data=b64(b"tenant=t2;purpose=keyward-e2e"), mount_point=MOUNT)
    with_errors(step, e)
    e = expect_error(step, (hx.InvalidRequest,), t.decrypt_data, name=name, ciphertext=ad_ct, mount_point=MOUNT)
    with_errors(step, e)
    passed("decrypt with a wrong or without the associated_data -> 400")

    step = "decrypt a tampered ciphertext -> 400"
    raw = bytearray(unb64(step, ct1.split(":", 2)[2]))
    raw[-1] ^= 0x01
    e = expect_error(step, (hx.InvalidRequest,), t.decrypt_data, name=name, ciphertext="vault:v1:" + b64(bytes(raw)),
                     mount_point=MOUNT)
    with_errors(step, e)
    e = expect_error(step, (hx.InvalidRequest,), t.decrypt_data, name=name, ciphertext="garbage", mount_point=MOUNT)
    with_errors(step, e)
    passed("decrypt a tampered or malformed ciphertext -> 400")

    # --- rotation ---
    step = "rotate"
    r = call(step, t.rotate_key, name=name, mount_point=MOUNT)
    if isinstance(r, requests.Response):
        check(step, r.status_code == 204, f"HTTP {r.status_code}: {r.text!r}")
    k = data(step, call(step, t.read_key, name=name, mount_point=MOUNT))
    check(step, k.get("latest_version") == 2, f"latest_version {k.get('latest_version')!r}")
    check(step, isinstance(k.get("keys"), dict) and sorted(k["keys"]) == ["1", "2"], f"keys {k.get('keys')!r}")
    check(step, k.get("min_decryption_version") == 1, f"min_decryption_version {k.get('min_decryption_version')!r}")
    passed(step)

    step = "after rotation: new ciphertexts are vault:v2:, the v1 one still decrypts"
    pt2 = os.urandom(16)
    enc = data(step, call(step, t.encrypt_data, name=name, plaintext=b64(pt2), mount_point=MOUNT))
    ct2 = ciphertext(step, enc.get("ciphertext"), 2)
    check(step, enc.get("key_version", 2) == 2, f"key_version {enc.get('key_version')!r}")
    dec = data(step, call(step, t.decrypt_data, name=name, ciphertext=ct2, mount_point=MOUNT))
    check(step, unb64(step, dec.get("plaintext")) == pt2, "v2 ciphertext decrypts to another plaintext")
    dec = data(step, call(step, t.decrypt_data, name=name, ciphertext=ct1, mount_point=MOUNT))
    check(step, unb64(step, dec.get("plaintext")) == pt, "v1 ciphertext decrypts to another plaintext")
    dec = data(step, call(step, t.decrypt_data, name=name, ciphertext=ad_ct, associated_data=ad, mount_point=MOUNT))
    check(step, unb64(step, dec.get("plaintext")) == ad_pt, "v1 ciphertext with associated_data")
    passed(step)

    step = "rewrap the v1 ciphertext -> v2"
    rw = data(step, call(step, t.rewrap_data, name=name, ciphertext=ct1, mount_point=MOUNT))
    rw_ct = ciphertext(step, rw.get("ciphertext"), 2)
    check(step, rw.get("key_version", 2) == 2, f"key_version {rw.get('key_version')!r}")
    dec = data(step, call(step, t.decrypt_data, name=name, ciphertext=rw_ct, mount_point=MOUNT))
    check(step, unb64(step, dec.get("plaintext")) == pt, "rewrapped ciphertext decrypts to another plaintext")
    passed(step)

    step = "min_decryption_version=2 refuses v1 ciphertexts (400)"
    call(step, t.update_key_configuration, name=name, min_decryption_version=2, mount_point=MOUNT)
    k = data(step, call(step, t.read_key, name=name, mount_point=MOUNT))
    check(step, k.get("min_decryption_version") == 2, f"min_decryption_version {k.get('min_decryption_version')!r}")
    # Vault then lists only the versions >= min_decryption_version in `keys`; "2" must be there.
    check(step, isinstance(k.get("keys"), dict) and "2" in k["keys"], f"keys {k.get('keys')!r}")
    e = expect_error(step, (hx.InvalidRequest,), t.decrypt_data, name=name, ciphertext=ct1, mount_point=MOUNT)
    with_errors(step, e)
    e = expect_error(step, (hx.InvalidRequest,), t.rewrap_data, name=name, ciphertext=ct1, mount_point=MOUNT)
    with_errors(step, e)
    dec = data(step, call(step, t.decrypt_data, name=name, ciphertext=ct2, mount_point=MOUNT))
    check(step, unb64(step, dec.get("plaintext")) == pt2, "v2 ciphertext no longer decrypts")
    passed(step)

    step = "min_decryption_version=1 again: v1 decrypts"
    call(step, t.update_key_configuration, name=name, min_decryption_version=1, mount_point=MOUNT)
    k = data(step, call(step, t.read_key, name=name, mount_point=MOUNT))
    check(step, k.get("min_decryption_version") == 1, f"min_decryption_version {k.get('min_decryption_version')!r}")
    dec = data(step, call(step, t.decrypt_data, name=name, ciphertext=ct1, mount_point=MOUNT))
    check(step, unb64(step, dec.get("plaintext")) == pt, "v1 ciphertext decrypts to another plaintext")
    passed(step)

    step = "config deletion_allowed"
    call(step, t.update_key_configuration, name=name, deletion_allowed=True, mount_point=MOUNT)
    k = data(step, call(step, t.read_key, name=name, mount_point=MOUNT))
    check(step, k.get("deletion_allowed") is True, f"deletion_allowed {k.get('deletion_allowed')!r}")
    call(step, t.update_key_configuration, name=name, deletion_allowed=False, mount_point=MOUNT)
    k = data(step, call(step, t.read_key, name=name, mount_point=MOUNT))
    check(step, k.get("deletion_allowed") is False, f"deletion_allowed {k.get('deletion_allowed')!r}")
    passed(step)

    step = "config auto_rotate_period 2160h, then 0"
    # 90 days: inside both Vault's (>= 1h) and AWS KMS's (90..2560 days) ranges.
    call(step, t.update_key_configuration, name=name, auto_rotate_period="2160h", mount_point=MOUNT)
    k = data(step, call(step, t.read_key, name=name, mount_point=MOUNT))
    check(step, k.get("auto_rotate_period") == 90 * 86400, f"auto_rotate_period {k.get('auto_rotate_period')!r}")
    call(step, t.update_key_configuration, name=name, auto_rotate_period="0", mount_point=MOUNT)
    k = data(step, call(step, t.read_key, name=name, mount_point=MOUNT))
    check(step, k.get("auto_rotate_period") == 0, f"auto_rotate_period {k.get('auto_rotate_period')!r}")
    passed(step)

    # --- batches ---
    step = "batch encrypt (3 items) / batch decrypt"
    pts = [os.urandom(n) for n in (1, 17, 64)]
    items = [{"plaintext": b64(pts[0])},
             {"plaintext": b64(pts[1]), "associated_data": ad},
             {"plaintext": b64(pts[2]), "reference": "third"}]
    res = data(step, call(step, t.encrypt_data, name=name, batch_input=items, mount_point=MOUNT)).get("batch_results")
    check(step, isinstance(res, list) and len(res) == 3, f"batch_results {res!r}")
    for i, item in enumerate(res):
        check(step, "error" not in item or not item["error"], f"item {i}: error {item.get('error')!r}")
        ciphertext(f"{step} item {i}", item.get("ciphertext"), 2)
    check(step, res[2].get("reference", "third") == "third", f"reference not echoed: {res[2]!r}")
    cts = [item["ciphertext"] for item in res]
    dec_in = [{"ciphertext": cts[0]}, {"ciphertext": cts[1], "associated_data": ad}, {"ciphertext": cts[2]}]
    res = data(step, call(step, t.decrypt_data, name=name, batch_input=dec_in, mount_point=MOUNT)).get("batch_results")
    check(step, isinstance(res, list) and len(res) == 3, f"batch_results {res!r}")
    for i, item in enumerate(res):
        check(step, "error" not in item or not item["error"], f"item {i}: error {item.get('error')!r}")
        check(step, unb64(step, item.get("plaintext")) == pts[i], f"item {i} decrypts to another plaintext")
    passed(step)

    step = "batch decrypt with one bad item -> 400 with an error for that item"
    bad_in = [{"ciphertext": cts[0]}, {"ciphertext": cts[1]}, {"ciphertext": cts[2]}]  # item 1 lacks its AD
    e = expect_error(step, (hx.InvalidRequest,), t.decrypt_data, name=name, batch_input=bad_in, mount_point=MOUNT)
    body = e.json or {}
    res = (body.get("data") or {}).get("batch_results")
    check(step, isinstance(res, list) and len(res) == 3, f"hvac's InvalidRequest body {body!r}")
    check(step, isinstance(res[1].get("error"), str) and res[1]["error"], f"item 1 has no error: {res[1]!r}")
    for i in (0, 2):
        check(step, not res[i].get("error"), f"item {i} failed: {res[i]!r}")
        check(step, unb64(step, res[i].get("plaintext")) == pts[i], f"item {i} decrypts to another plaintext")
    # The same request raw: the status, the Content-Type and the body itself.
    resp = requests.post(f"{addr}/v1/{MOUNT}/decrypt/{name}", headers=hdr, json={"batch_input": bad_in}, timeout=30)
    check(step, resp.status_code == 400, f"raw: HTTP {resp.status_code} {resp.text!r}")
    check(step, resp.headers.get("Content-Type") == "application/json", f"Content-Type {resp.headers.get('Content-Type')!r}")
    res = (resp.json().get("data") or {}).get("batch_results")
    check(step, isinstance(res, list) and len(res) == 3 and res[1].get("error") and not res[0].get("error"),
          f"raw body {resp.text!r}")
    passed(step)

    step = "batch encrypt with one bad item -> 400 with an error for that item"
    bad_in = [{"plaintext": b64(b"ok")}, {"plaintext": "!!not-base64"}]
    e = expect_error(step, (hx.InvalidRequest,), t.encrypt_data, name=name, batch_input=bad_in, mount_point=MOUNT)
    res = ((e.json or {}).get("data") or {}).get("batch_results")
    check(step, isinstance(res, list) and len(res) == 2, f"hvac's InvalidRequest body {e.json!r}")
    check(step, not res[0].get("error"), f"item 0 failed: {res[0]!r}")
    ciphertext(step, res[0].get("ciphertext"), 2)
    check(step, isinstance(res[1].get("error"), str) and res[1]["error"], f"item 1 has no error: {res[1]!r}")
    passed(step)

    # --- data keys, random ---
    step = "datakey plaintext"
    dk = data(step, call(step, t.generate_data_key, name=name, key_type="plaintext", mount_point=MOUNT))
    key_bytes = unb64(step, dk.get("plaintext"))
    check(step, len(key_bytes) == 32, f"plaintext is {len(key_bytes)} bytes")
    dk_ct = ciphertext(step, dk.get("ciphertext"), 2)
    dec = data(step, call(step, t.decrypt_data, name=name, ciphertext=dk_ct, mount_point=MOUNT))
    check(step, unb64(step, dec.get("plaintext")) == key_bytes, "ciphertext does not decrypt to the plaintext")
    passed(step)

    step = "datakey wrapped"
    dk = data(step, call(step, t.generate_data_key, name=name, key_type="wrapped", mount_point=MOUNT))
    check(step, not dk.get("plaintext"), f"a wrapped data key carries a plaintext: {sorted(dk)!r}")
    dk_ct = ciphertext(step, dk.get("ciphertext"), 2)
    dec = data(step, call(step, t.decrypt_data, name=name, ciphertext=dk_ct, mount_point=MOUNT))
    check(step, len(unb64(step, dec.get("plaintext"))) == 32, "wrapped data key does not decrypt to 32 bytes")
    passed(step)

    step = "datakey plaintext bits=512"
    dk = data(step, call(step, t.generate_data_key, name=name, key_type="plaintext", bits=512, mount_point=MOUNT))
    check(step, len(unb64(step, dk.get("plaintext"))) == 64, "not 64 bytes")
    passed(step)

    step = "random bytes (32, base64 and hex)"
    r1 = data(step, call(step, t.generate_random_bytes, n_bytes=32, mount_point=MOUNT)).get("random_bytes")
    r2 = data(step, call(step, t.generate_random_bytes, n_bytes=32, mount_point=MOUNT)).get("random_bytes")
    check(step, len(unb64(step, r1)) == 32 and len(unb64(step, r2)) == 32, f"{r1!r} is not 32 bytes")
    check(step, r1 != r2, "two random draws are equal")
    rh = data(step, call(step, t.generate_random_bytes, n_bytes=16, output_format="hex", mount_point=MOUNT))
    check(step, re.fullmatch(r"[0-9a-f]{32}", rh.get("random_bytes") or "") is not None, f"hex {rh!r}")
    # The path form random/:bytes (hvac sends the count in the body).
    resp = requests.post(f"{addr}/v1/{MOUNT}/random/24", headers=hdr, json={}, timeout=30)
    check(step, resp.status_code == 200, f"random/24: HTTP {resp.status_code} {resp.text!r}")
    check(step, len(unb64(step, resp.json()["data"]["random_bytes"])) == 24, "random/24 is not 24 bytes")
    passed(step)

    # --- refusals ---
    step = "a bad token -> Forbidden (403 permission denied)"
    bad = hvac.Client(url=addr, token="keyward-e2e-not-a-token")
    check(step, bad.is_authenticated() is False, "is_authenticated() is True for a bad token")
    e = expect_error(step, (hx.Forbidden,), bad.secrets.transit.encrypt_data, name=name, plaintext=b64(b"x"),
                     mount_point=MOUNT)
    check(step, e.errors == ["permission denied"], f"errors {e.errors!r}")
    e = expect_error(step, (hx.Forbidden,), bad.secrets.transit.decrypt_data, name=name, ciphertext=ct1,
                     mount_point=MOUNT)
    check(step, e.errors == ["permission denied"], f"errors {e.errors!r}")
    resp = requests.post(f"{addr}/v1/{MOUNT}/encrypt/{name}", json={"plaintext": b64(b"x")}, timeout=30)
    check(step, resp.status_code == 403 and resp.json() == {"errors": ["permission denied"]},
          f"no token: HTTP {resp.status_code} {resp.text!r}")
    passed(step)

    step = "decrypt under an unknown key -> 400/404"
    e = expect_error(step, (hx.InvalidRequest, hx.InvalidPath), t.decrypt_data, name=missing, ciphertext=ct1,
                     mount_point=MOUNT)
    with_errors(step, e)
    e = expect_error(step, (hx.InvalidRequest, hx.InvalidPath), t.generate_data_key, name=missing,
                     key_type="plaintext", mount_point=MOUNT)
    with_errors(step, e)
    passed(step)

    if os.environ.get("KEYWARD_NO_UPSERT") == "1":
        step = "encrypt under an unknown key -> an error (no upsert)"
        try:
            r = t.encrypt_data(name=missing, plaintext=b64(b"x"), mount_point=MOUNT)
            raise StepFailed(f"{step}: the call succeeded: {r!r}")
        except hx.VaultError as e:
            with_errors(step, e)
        e = expect_error(step, (hx.InvalidPath,), t.read_key, name=missing, mount_point=MOUNT)
        passed(step)
    else:
        step = "encrypt under an unknown key creates it (Vault's upsert)"
        enc = data(step, call(step, t.encrypt_data, name=missing, plaintext=b64(b"x"), mount_point=MOUNT))
        ciphertext(step, enc.get("ciphertext"), 1)
        k = data(step, call(step, t.read_key, name=missing, mount_point=MOUNT))
        check(step, k.get("latest_version") == 1, f"read after upsert {k!r}")
        passed(step)

    step = f"a key without a grant ({denied_key}) -> Forbidden (403 permission denied)"
    dt = hvac.Client(url=addr, token=denied_token).secrets.transit
    for label, fn, kw in (("encrypt", dt.encrypt_data, {"plaintext": b64(b"x")}),
                          ("datakey plaintext", dt.generate_data_key, {"key_type": "plaintext"})):
        e = expect_error(f"{step} {label}", (hx.Forbidden,), fn, name=denied_key, mount_point=MOUNT, **kw)
        with_errors(f"{step} {label}", e, "permission denied")
    passed(step)

    step = "PUT without Content-Type (as the Vault Go client sends)"
    resp = requests.put(f"{addr}/v1/{MOUNT}/encrypt/{name}", headers=hdr,
                        data=json.dumps({"plaintext": b64(pt2)}).encode(), timeout=30)
    check(step, "Content-Type" not in resp.request.headers, f"requests sent {resp.request.headers!r}")
    check(step, resp.status_code == 200, f"encrypt: HTTP {resp.status_code} {resp.text!r}")
    put_ct = ciphertext(step, resp.json()["data"]["ciphertext"], 2)
    resp = requests.put(f"{addr}/v1/{MOUNT}/decrypt/{name}", headers=hdr,
                        data=json.dumps({"ciphertext": put_ct}).encode(), timeout=30)
    check(step, resp.status_code == 200, f"decrypt: HTTP {resp.status_code} {resp.text!r}")
    check(step, unb64(step, resp.json()["data"]["plaintext"]) == pt2, "decrypts to another plaintext")
    passed(step)

    step = "an unsupported path -> 404/405 with errors"
    resp = requests.post(f"{addr}/v1/{MOUNT}/no-such-path", headers=hdr, json={}, timeout=30)
    check(step, resp.status_code in (404, 405), f"HTTP {resp.status_code} {resp.text!r}")
    check(step, resp.headers.get("Content-Type") == "application/json", f"Content-Type {resp.headers.get('Content-Type')!r}")
    check(step, isinstance(resp.json().get("errors"), list), f"body {resp.text!r}")
    passed(step)

    print(json.dumps({"ok": True, "steps": STEPS}), flush=True)


if __name__ == "__main__":
    try:
        main()
    except StepFailed as e:
        print(f"FAILED: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception as e:  # a client-side error (connection, parameter validation): name the step
        print(f"FAILED after step {STEPS}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
