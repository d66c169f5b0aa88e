"""Malformed requests to Keyward's AWS KMS edge, each correctly signed with botocore's own SigV4
signer (so the refusal is about the request, not the signature): bad JSON, wrong field types,
an oversized body, an unknown operation, a missing X-Amz-Target, a body-hash mismatch. Each must
get AWS's error shape ({"__type", "message"} naming the field) with its status and an
x-amzn-RequestId, and afterwards the server still serves.

Inputs: AWS_ENDPOINT_URL_KMS, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION,
KEYWARD_KEY_ARN. Prints one line per step, then {"ok": true, "steps": N}.
"""
import json
import os
import sys
import urllib.error
import urllib.request

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

STEPS = 0
URL = os.environ["AWS_ENDPOINT_URL_KMS"].rstrip("/") + "/"
REGION = os.environ["AWS_DEFAULT_REGION"]
CREDS = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
KEY = os.environ["KEYWARD_KEY_ARN"]


def fail(msg):
    print(f"FAILED: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def send(target, body, headers=None, sign=True):
    h = {"Content-Type": "application/x-amz-json-1.1"}
    if target is not None:
        h["X-Amz-Target"] = f"TrentService.{target}"
    h.update(headers or {})
    req = AWSRequest(method="POST", url=URL, data=body, headers=h)
    if sign:
        SigV4Auth(CREDS, "kms", REGION).add_auth(req)
    prepared = req.prepare()
    r = urllib.request.Request(URL, data=body, method="POST", headers=dict(prepared.headers.items()))
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def expect(step, status, kind, field, target, body, **kw):
    global STEPS
    got, headers, raw = send(target, body, **kw)
    if got != status:
        fail(f"{step}: HTTP {got}, expected {status}: {raw[:300]!r}")
    if not headers.get("x-amzn-RequestId"):
        fail(f"{step}: no x-amzn-RequestId")
    try:
        err = json.loads(raw)
    except ValueError:
        fail(f"{step}: the error body is not JSON: {raw[:200]!r}")
    if err.get("__type") != kind:
        fail(f"{step}: __type {err.get('__type')!r}, expected {kind}: {err}")
    if field and field not in err.get("message", ""):
        fail(f"{step}: the message does not name {field}: {err.get('message')!r}")
    STEPS += 1
    print(f"ok {STEPS} {step}", flush=True)


def main():
    global STEPS
    expect("bad JSON", 400, "SerializationException", "body", "Encrypt", b'{"KeyId": ')
    expect("a JSON array", 400, "SerializationException", "body", "Encrypt", b"[1, 2]")
    expect("Plaintext of the wrong type", 400, "ValidationException", "Plaintext", "Encrypt",
           json.dumps({"KeyId": KEY, "Plaintext": 12}).encode())
    expect("Plaintext that is not base64", 400, "ValidationException", "Plaintext", "Encrypt",
           json.dumps({"KeyId": KEY, "Plaintext": "!!not base64!!"}).encode())
    expect("KeyId missing", 400, "ValidationException", "KeyId", "Encrypt",
           json.dumps({"Plaintext": "aGVsbG8="}).encode())
    expect("EncryptionContext values must be strings", 400, "ValidationException", "EncryptionContext",
           "Encrypt", json.dumps({"KeyId": KEY, "Plaintext": "aGVsbG8=", "EncryptionContext": {"a": 1}}).encode())
    expect("NumberOfBytes out of range", 400, "ValidationException", "NumberOfBytes", "GenerateDataKey",
           json.dumps({"KeyId": KEY, "NumberOfBytes": 0}).encode())
    expect("both KeySpec and NumberOfBytes", 400, "ValidationException", "KeySpec", "GenerateDataKey",
           json.dumps({"KeyId": KEY, "NumberOfBytes": 32, "KeySpec": "AES_256"}).encode())
    expect("an unknown KeySpec", 400, "ValidationException", "KeySpec", "GenerateDataKey",
           json.dumps({"KeyId": KEY, "KeySpec": "AES_512"}).encode())
    expect("a CiphertextBlob that is not a ciphertext", 400, "InvalidCiphertextException", None, "Decrypt",
           json.dumps({"CiphertextBlob": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}).encode())
    expect("an oversized body", 413, "ValidationException", "bytes", "Encrypt", b"{" + b" " * 70000 + b"}")
    expect("an unsupported operation", 400, "UnsupportedOperationException", "CreateGrant", "CreateGrant",
           json.dumps({"KeyId": KEY}).encode())
    expect("no X-Amz-Target", 400, "UnknownOperationException", "X-Amz-Target", None, b"{}")
    expect("a body that is not the one signed", 400, "InvalidSignatureException", None, "Encrypt",
           b"{}", headers={"X-Amz-Content-Sha256": "0" * 64})
    expect("a wrong Content-Type", 400, "SerializationException", "Content-Type", "Encrypt", b"{}",
           headers={"Content-Type": "text/plain"})

    # And the server still serves.
    kms = boto3.client("kms")
    ct = kms.encrypt(KeyId=KEY, Plaintext=b"still serving")["CiphertextBlob"]
    if kms.decrypt(CiphertextBlob=ct)["Plaintext"] != b"still serving":
        fail("the server no longer round-trips after the bad requests")
    STEPS += 1
    print(f"ok {STEPS} the server still serves", flush=True)
    print(json.dumps({"ok": True, "steps": STEPS}), flush=True)


if __name__ == "__main__":
    main()
