// Regenerates js-sdk-v3.json: requests the AWS SDK for JavaScript v3 KMS client sends, captured
// off the wire by a local server (the time is whatever the clock said; it is recorded as "now").
// Usage: cd <dir with @aws-sdk/client-kms installed> && node gen_js_sdk.mjs <output dir>
import http from "node:http";
import fs from "node:fs";
import { createRequire } from "node:module";
const require = createRequire(process.cwd() + "/");
const { KMSClient, EncryptCommand, ListKeysCommand } = require("@aws-sdk/client-kms");
const version = require("@aws-sdk/client-kms/package.json").version;

const AKID = "AKIAKEYWARDTEST00001", SECRET = "kw/Test+Secret/0123456789abcdefEXAMPLEKEY";
const captured = [];
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const headers = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) headers.push([req.rawHeaders[i], req.rawHeaders[i + 1]]);
    captured.push({ path: req.url, headers, body: Buffer.concat(chunks).toString() });
    const out = '{"__type":"NotFoundException","message":"no"}';
    res.writeHead(400, { "Content-Type": "application/x-amz-json-1.1", "Content-Length": out.length });
    res.end(out);
  });
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const port = server.address().port;
const mk = (sessionToken) => new KMSClient({
  endpoint: `http://127.0.0.1:${port}`, region: "keyward-1", maxAttempts: 1,
  credentials: { accessKeyId: AKID, secretAccessKey: SECRET, sessionToken },
});
const names = [];
for (const [name, client, cmd] of [
  ["js-sdk-v3-encrypt", mk(), new EncryptCommand({ KeyId: "alias/app", Plaintext: Buffer.from("hello world"), EncryptionContext: { a: "b" } })],
  ["js-sdk-v3-session-token", mk("IQoJb3JpZ2luX2VjEKW//////////wEaCXVzLWVhc3QtMSJHMEUCIQDexampleSessionToken+/=="), new ListKeysCommand({})],
]) {
  names.push(name);
  try { await client.send(cmd); } catch (e) { /* the 400 we answer */ }
}
server.close();
const cases = captured.map((c, i) => {
  const date = c.headers.find(([k]) => k.toLowerCase() === "x-amz-date")[1];
  const iso = `${date.slice(0, 4)}-${date.slice(4, 6)}-${date.slice(6, 8)}T${date.slice(9, 11)}:${date.slice(11, 13)}:${date.slice(13, 15)}Z`;
  return { name: names[i], method: "POST", path: c.path, query: "", headers: c.headers, body: c.body,
    now: Date.parse(iso) / 1000, access_key_id: AKID, secret: SECRET, region: "keyward-1", service: "kms" };
});
fs.writeFileSync(`${process.argv[2]}/js-sdk-v3.json`,
  JSON.stringify({ generator: `gen_js_sdk.mjs, @aws-sdk/client-kms ${version}`, cases }, null, 1));
console.log(JSON.stringify(cases, null, 1));
