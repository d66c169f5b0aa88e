"""boto3 with bad credentials against Keyward's AWS KMS edge: each refusal is the error the AWS
SDKs recognise, and botocore does not retry it.

Inputs: the same environment as aws_boto3.py (AWS_ENDPOINT_URL_KMS, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, KEYWARD_KEY_ARN).
Prints one line per step passed, then {"ok": true, "steps": N}.
"""
import json
import os
import sys
import uuid

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

STEPS = 0


class StepFailed(Exception):
    pass


def passed(step):
    global STEPS
    STEPS += 1
    print(f"ok {STEPS} {step}", flush=True)


def expect_refusal(step, code, kms, key_arn, status=400):
    try:
        kms.encrypt(KeyId=key_arn, Plaintext=b"secret")
    except ClientError as e:
        got = e.response.get("Error", {}).get("Code")
        md = e.response.get("ResponseMetadata", {})
        if got != code:
            raise StepFailed(f"{step}: expected {code}, got {got}: {e.response.get('Error')}")
        if md.get("HTTPStatusCode") != status:
            raise StepFailed(f"{step}: expected HTTP {status}, got {md.get('HTTPStatusCode')}")
        if md.get("RetryAttempts") != 0:
            raise StepFailed(f"{step}: botocore retried {md.get('RetryAttempts')} times (expected 0)")
        if not md.get("RequestId"):
            raise StepFailed(f"{step}: error response has no RequestId")
        passed(step)
        return
    raise StepFailed(f"{step}: expected {code}, the call succeeded")


def main():
    key_arn = os.environ["KEYWARD_KEY_ARN"]
    akid = os.environ["AWS_ACCESS_KEY_ID"]
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]

    # The good credentials work (so the refusals below are about the credentials alone).
    good = boto3.client("kms")
    r = good.generate_random(NumberOfBytes=8)
    if len(r["Plaintext"]) != 8 or r["ResponseMetadata"]["RetryAttempts"] != 0:
        raise StepFailed("good credentials: GenerateRandom failed")
    passed("good credentials accepted")

    # Explicit credential arguments replace the environment's, as an application would pass them.
    wrong_secret = boto3.client("kms", aws_access_key_id=akid, aws_secret_access_key=secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    expect_refusal("wrong secret -> InvalidSignatureException, not retried", "InvalidSignatureException",
                   wrong_secret, key_arn)

    unknown = boto3.client("kms", aws_access_key_id="AKIA" + uuid.uuid4().hex[:16].upper(),
                           aws_secret_access_key=secret)
    expect_refusal("unknown access key id -> UnrecognizedClientException, not retried",
                   "UnrecognizedClientException", unknown, key_arn)

    unsigned = boto3.client("kms", config=Config(signature_version=UNSIGNED))
    expect_refusal("unsigned request -> MissingAuthenticationTokenException, not retried",
                   "MissingAuthenticationTokenException", unsigned, key_arn, status=403)

    # A session token is signed in as x-amz-security-token; it is tolerated, and the signature still
    # decides.
    with_token = boto3.client("kms", aws_access_key_id=akid, aws_secret_access_key=secret,
                              aws_session_token="keyward-ignored-session-token")
    r = with_token.generate_random(NumberOfBytes=8)
    if len(r["Plaintext"]) != 8:
        raise StepFailed("session token tolerated: GenerateRandom failed")
    passed("session token tolerated")

    print(json.dumps({"ok": True, "steps": STEPS}), flush=True)


if __name__ == "__main__":
    try:
        main()
    except StepFailed as e:
        print(f"FAILED: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception as e:
        print(f"FAILED after step {STEPS}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
