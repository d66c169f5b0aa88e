"""Regenerates aws-sig-v4-test-suite.json from awslabs/aws-c-auth tests/aws-signing-test-suite/v4
(AWS's SigV4 test suite, Apache-2.0, see AWS-SUITE-NOTICE). Only header-signed, non-S3
("normalize": true) cases are kept; query-presigned and S3-style unnormalized cases are not
what a KMS JSON endpoint receives.
Usage: python3 gen_aws_suite.py /path/to/aws-c-auth.git
"""
import json, subprocess, sys
git = sys.argv[1]
B = "tests/aws-signing-test-suite/v4"
def show(p):
    return subprocess.run(["git", "--git-dir", git, "show", "HEAD:" + p], check=True,
                          capture_output=True).stdout.decode()
rev = subprocess.run(["git", "--git-dir", git, "rev-parse", "HEAD"], capture_output=True).stdout.decode().strip()
names = subprocess.run(["git", "--git-dir", git, "ls-tree", "--name-only", "HEAD", B + "/"],
                       check=True, capture_output=True).stdout.decode().split()
cases, skipped = [], []
for d in names:
    n = d.rsplit("/", 1)[1]
    ctx = json.loads(show(d + "/context.json"))
    if not ctx.get("normalize", True):
        skipped.append(n); continue
    cases.append({"name": n, "token": ctx["credentials"].get("token"),
                  "signed_request": show(d + "/header-signed-request.txt"),
                  "canonical_request": show(d + "/header-canonical-request.txt"),
                  "string_to_sign": show(d + "/header-string-to-sign.txt"),
                  "signature": show(d + "/header-signature.txt").strip()})
out = {"source": f"github.com/awslabs/aws-c-auth@{rev} {B}", "secret": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
       "region": "us-east-1", "service": "service", "time": "20150830T123600Z",
       "skipped_unnormalized": skipped, "cases": cases}
json.dump(out, open("aws-sig-v4-test-suite.json", "w"), indent=1)
print(len(cases), "cases; skipped", skipped)
