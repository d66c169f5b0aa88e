"""The AWS Encryption SDK for Python (4.x) in strict mode against Keyward's AWS KMS edge:
encrypt and decrypt a 1 MiB message under KEYWARD_KEY_ARN with an encryption context.

The SDK builds its KMS clients with boto3 (`boto3.session.Session(botocore_session=...)
.client("kms", region_name=<region from the key ARN>)`), so botocore takes the endpoint from
AWS_ENDPOINT_URL_KMS like any boto3 client; no SDK argument is needed.
Inputs: AWS_ENDPOINT_URL_KMS, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION,
KEYWARD_KEY_ARN, KEYWARD_OTHER_KEY_ARN.
Prints one line per step passed, then {"ok": true, "steps": N}.
"""
import json
import logging
import os
import sys

import aws_encryption_sdk
from aws_encryption_sdk import CommitmentPolicy
from aws_encryption_sdk.exceptions import AWSEncryptionSDKClientError

STEPS = 0


class StepFailed(Exception):
    pass


def passed(step):
    global STEPS
    STEPS += 1
    print(f"ok {STEPS} {step}", flush=True)


def main():
    logging.disable(logging.ERROR)  # the SDK logs a traceback ("Error on closing") for refused messages
    key_arn = os.environ["KEYWARD_KEY_ARN"]
    other_arn = os.environ["KEYWARD_OTHER_KEY_ARN"]
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    provider = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=[key_arn])

    message = os.urandom(1024 * 1024)
    context = {"purpose": "keyward-e2e", "tenant": "t1"}

    step = "encrypt 1 MiB in strict mode"
    ciphertext, enc_header = client.encrypt(source=message, key_provider=provider, encryption_context=context)
    if len(ciphertext) <= len(message):
        raise StepFailed(f"{step}: ciphertext of {len(ciphertext)} bytes")
    edks = list(enc_header.encrypted_data_keys)
    if len(edks) != 1 or edks[0].key_provider.provider_id != "aws-kms":
        raise StepFailed(f"{step}: encrypted data keys {edks!r}")
    if edks[0].key_provider.key_info.decode() != key_arn:
        raise StepFailed(f"{step}: data key wrapped under {edks[0].key_provider.key_info!r}, not {key_arn}")
    passed(step)

    step = "decrypt in strict mode"
    plaintext, dec_header = client.decrypt(source=ciphertext, key_provider=provider)
    if plaintext != message:
        raise StepFailed(f"{step}: decrypted message differs ({len(plaintext)} bytes)")
    passed(step)

    step = "decrypt header carries the encryption context"
    got = dec_header.encryption_context
    missing = {k: v for k, v in context.items() if got.get(k) != v}
    if missing:
        raise StepFailed(f"{step}: header context {got!r} lacks {missing!r}")
    # The default (signing) suite adds its own pair, which KMS saw as part of the context.
    if "aws-crypto-public-key" not in got:
        raise StepFailed(f"{step}: no aws-crypto-public-key pair in {sorted(got)}")
    passed(step)

    # Strict mode only asks KMS about data keys wrapped under its configured ARNs: this one is
    # refused by the SDK itself, without a request.
    step = "a strict provider for another key refuses the message"
    try:
        client.decrypt(source=ciphertext,
                       key_provider=aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=[other_arn]))
    except AWSEncryptionSDKClientError:
        passed(step)
    else:
        raise StepFailed(f"{step}: decrypted with a provider for {other_arn}")

    step = "tampered message is refused"
    bad = bytearray(ciphertext)
    bad[len(bad) // 2] ^= 1  # in the framed body: KMS still unwraps the data key, the frame tag fails
    try:
        client.decrypt(source=bytes(bad), key_provider=provider)
    except Exception:  # cryptography's InvalidTag, not an SDK error class
        passed(step)
    else:
        raise StepFailed(f"{step}: a tampered message decrypted")

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
