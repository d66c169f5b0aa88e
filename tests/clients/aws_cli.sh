#!/usr/bin/env bash
# aws-cli v1 against Keyward's AWS KMS edge, pointed at it only through AWS_ENDPOINT_URL_KMS and
# the usual credential variables. Inputs: AWS_ENDPOINT_URL_KMS, AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, KEYWARD_KEY_ARN, KEYWARD_KEY_ALIAS.
# Prints one line per step passed, then {"ok": true, "steps": N}.
set -euo pipefail

: "${KEYWARD_KEY_ARN:?KEYWARD_KEY_ARN is not set}"
: "${KEYWARD_KEY_ALIAS:?KEYWARD_KEY_ALIAS is not set}"
: "${AWS_ENDPOINT_URL_KMS:?AWS_ENDPOINT_URL_KMS is not set}"

T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
STEPS=0
STEP="setup"
trap 'echo "FAILED: $STEP (line $LINENO)" >&2' ERR
passed() { STEPS=$((STEPS + 1)); echo "ok $STEPS $1"; }
fail() { echo "FAILED: $STEP: $*" >&2; exit 1; }

STEP="aws --version"
aws --version >/dev/null 2>&1 || fail "aws does not run"
passed "$STEP"

STEP="encrypt/decrypt round trip by key ARN with an encryption context"
head -c 100 /dev/urandom >"$T/plain"
aws kms encrypt --key-id "$KEYWARD_KEY_ARN" --plaintext "fileb://$T/plain" \
  --encryption-context purpose=keyward-e2e,tenant=t1 \
  --output text --query CiphertextBlob | base64 -d >"$T/cipher"
[[ -s "$T/cipher" ]] || fail "empty CiphertextBlob"
out_key="$(aws kms decrypt --ciphertext-blob "fileb://$T/cipher" \
  --encryption-context purpose=keyward-e2e,tenant=t1 \
  --output text --query '[KeyId, Plaintext]')"
read -r got_key got_plain <<<"$out_key"
[[ "$got_key" == "$KEYWARD_KEY_ARN" ]] || fail "Decrypt KeyId is '$got_key', not the key ARN"
printf '%s' "$got_plain" | base64 -d >"$T/back"
cmp -s "$T/plain" "$T/back" || fail "decrypted plaintext differs"
passed "$STEP"

STEP="decrypt with a wrong encryption context fails with InvalidCiphertextException"
if aws kms decrypt --ciphertext-blob "fileb://$T/cipher" --encryption-context purpose=other \
  --output text --query Plaintext >"$T/out" 2>"$T/err"; then
  fail "decrypted under a wrong context"
fi
grep -q InvalidCiphertextException "$T/err" || fail "stderr: $(cat "$T/err")"
passed "$STEP"

STEP="encrypt by alias name"
got_key="$(aws kms encrypt --key-id "$KEYWARD_KEY_ALIAS" --plaintext "fileb://$T/plain" \
  --output text --query KeyId)"
[[ "$got_key" == "$KEYWARD_KEY_ARN" ]] || fail "Encrypt KeyId is '$got_key', not the key ARN"
passed "$STEP"

STEP="describe-key"
read -r arn state spec enabled <<<"$(aws kms describe-key --key-id "$KEYWARD_KEY_ARN" --output text \
  --query '[KeyMetadata.Arn, KeyMetadata.KeyState, KeyMetadata.KeySpec, KeyMetadata.Enabled]')"
[[ "$arn" == "$KEYWARD_KEY_ARN" ]] || fail "Arn '$arn'"
[[ "$state" == "Enabled" ]] || fail "KeyState '$state'"
[[ "$spec" == "SYMMETRIC_DEFAULT" ]] || fail "KeySpec '$spec'"
[[ "$enabled" == "True" ]] || fail "Enabled '$enabled'"
aws kms describe-key --key-id "$KEYWARD_KEY_ALIAS" --output json >"$T/desc.json"
grep -q "\"KeyId\": \"$KEYWARD_KEY_ARN\"" "$T/desc.json" || fail "describe-key by alias: $(cat "$T/desc.json")"
passed "$STEP"

STEP="generate-data-key --key-spec AES_256"
read -r dk_plain dk_cipher <<<"$(aws kms generate-data-key --key-id "$KEYWARD_KEY_ARN" --key-spec AES_256 \
  --output text --query '[Plaintext, CiphertextBlob]')"
printf '%s' "$dk_plain" | base64 -d >"$T/dk"
[[ "$(stat -c %s "$T/dk")" == 32 ]] || fail "data key is $(stat -c %s "$T/dk") bytes"
printf '%s' "$dk_cipher" | base64 -d >"$T/dk.cipher"
aws kms decrypt --ciphertext-blob "fileb://$T/dk.cipher" --output text --query Plaintext | base64 -d >"$T/dk.back"
cmp -s "$T/dk" "$T/dk.back" || fail "the data key's CiphertextBlob decrypts to another key"
passed "$STEP"

STEP="an unknown key exits non-zero with NotFoundException"
unknown="${KEYWARD_KEY_ARN%/*}/$(cat /proc/sys/kernel/random/uuid)"
if aws kms describe-key --key-id "$unknown" >"$T/out" 2>"$T/err"; then
  fail "describe-key of $unknown succeeded"
fi
grep -q NotFoundException "$T/err" || fail "stderr: $(cat "$T/err")"
if aws kms encrypt --key-id "$unknown" --plaintext "fileb://$T/plain" >"$T/out" 2>"$T/err"; then
  fail "encrypt under $unknown succeeded"
fi
grep -q NotFoundException "$T/err" || fail "stderr: $(cat "$T/err")"
passed "$STEP"

echo "{\"ok\": true, \"steps\": $STEPS}"
