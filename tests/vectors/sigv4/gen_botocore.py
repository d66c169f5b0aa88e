"""Regenerates botocore.json: requests signed by botocore's own SigV4 signer.

Run with the venv that has boto3: /var/tmp/sigv4-venv/bin/python gen_botocore.py
The clock is pinned so the output is reproducible.
"""
import datetime, http.server, json, threading, os
import botocore.auth, botocore.awsrequest, botocore.credentials
import boto3

NOW = datetime.datetime(2026, 12, 2, 4, 50, 7, tzinfo=datetime.timezone.utc)
botocore.auth.get_current_datetime = lambda *a, **k: NOW.replace(tzinfo=None)
AKID, SECRET = "AKIAKEYWARDTEST00001", "kw/Test+Secret/0123456789abcdefEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjEKW//////////wEaCXVzLWVhc3QtMSJHMEUCIQDexampleSessionToken+/=="
URL = "http://127.0.0.1:8900/"
BODY = json.dumps({"KeyId": "alias/app", "Plaintext": "aGVsbG8gd29ybGQ=",
                   "EncryptionContext": {"purpose": "test  two  spaces"}}).encode()

def sign(name, extra=None, token=None, body=BODY, target="TrentService.Encrypt"):
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target}
    headers.update(extra or {})
    req = botocore.awsrequest.AWSRequest(method="POST", url=URL, data=body, headers=headers)
    creds = botocore.credentials.Credentials(AKID, SECRET, token)
    botocore.auth.SigV4Auth(creds, "kms", "keyward-1").add_auth(req)
    hs = [[k, v] for k, v in req.headers.items()]
    if not any(k.lower() == "host" for k, _ in hs):
        hs.append(["Host", "127.0.0.1:8900"])  # what urllib3 puts on the wire
    return case(name, hs, body)

def case(name, headers, body):
    return {"name": name, "method": "POST", "path": "/", "query": "", "headers": headers,
            "body": body.decode(), "now": int(NOW.timestamp()), "access_key_id": AKID,
            "secret": SECRET, "region": "keyward-1", "service": "kms"}

cases = [
    sign("botocore-encrypt"),
    sign("botocore-session-token", token=TOKEN),
    sign("botocore-go-sdk-like", extra={
        "Amz-Sdk-Invocation-Id": "8d2a4b53-2f0e-4a6b-9b3f-6f1d8e3c9a10",
        "Amz-Sdk-Request": "attempt=1; max=3", "Content-Length": str(len(BODY))}),
    sign("botocore-date-header", extra={"Date": "Wed, 02 Dec 2026 04:50:07 GMT"}),
    sign("botocore-empty-body", body=b"", target="TrentService.ListKeys"),
]

# One request captured off the wire from a real boto3 KMS client.
captured = {}
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        captured["headers"] = [[k, v] for k, v in self.headers.items()]
        captured["body"] = self.rfile.read(n)
        captured["path"] = self.path
        out = b'{"__type":"NotFoundException","message":"no"}'
        self.send_response(400)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers(); self.wfile.write(out)
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=srv.handle_request, daemon=True).start()
kms = boto3.client("kms", endpoint_url=f"http://127.0.0.1:{srv.server_port}", region_name="keyward-1",
                   aws_access_key_id=AKID, aws_secret_access_key=SECRET,
                   config=botocore.config.Config(retries={"max_attempts": 1}))
try:
    kms.encrypt(KeyId="alias/app", Plaintext=b"hello world", EncryptionContext={"a": "b"})
except Exception:
    pass
c = case("boto3-kms-client-wire", captured["headers"], captured["body"])
c["path"] = captured["path"]
cases.append(c)

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "botocore.json"), "w") as f:
    json.dump({"generator": "gen_botocore.py, botocore " + botocore.__version__, "cases": cases}, f, indent=1)
print(json.dumps(cases, indent=1)[:6000])
