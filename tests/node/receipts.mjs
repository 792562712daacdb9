// A partner checking the gateway's delivery receipts with nothing but Node 20 and `jose`:
// the SSE stream read as bytes, each receipt verified against the gateway's published JWKS,
// its SHA-256 recomputed from the record events received, and acknowledged with a detached JWS.
// Usage: node receipts.mjs <gateway-url> <org> <private-jwks-file> <contract> <records>: reads
// until receipts cover that many records; prints one JSON line.
import { createHash } from "node:crypto";
import { CompactSign, compactVerify, createLocalJWKSet } from "jose";
import { json, partner } from "./partner.mjs";

const [url, org, keyFile, contract, wanted] = process.argv.slice(2);
let covered = 0;
const { jwk, key, auth } = await partner(url, org, keyFile);
const metadata = await json(await fetch(`${url}/.well-known/oauth-authorization-server`));
const gatewayKeys = createLocalJWKSet(await json(await fetch(metadata.jwks_uri)));

const stream = await fetch(`${url}/v1/contracts/${contract}/stream?from=earliest`, {
  headers: { ...auth, accept: "text/event-stream" },
});
const reader = stream.body.getReader();
let buffer = Buffer.alloc(0);
let received = createHash("sha256");
let count = 0;
const receipts = [];
while (covered < Number(wanted)) {
  const { value, done } = await reader.read();
  if (done) break;
  buffer = Buffer.concat([buffer, Buffer.from(value)]);
  let end;
  while ((end = buffer.indexOf("\n\n")) >= 0) {
    const event = buffer.subarray(0, end + 2); // the event's bytes, exactly as sent
    buffer = buffer.subarray(end + 2);
    const text = event.toString("utf8");
    if (text.startsWith("event: record\n") || text.startsWith("event: refused\n")) {
      received.update(event);
      count += 1;
    } else if (text.startsWith("event: receipt\n")) {
      const data = JSON.parse(text.split("\n").find((l) => l.startsWith("data: ")).slice(6));
      const { payload, protectedHeader } = await compactVerify(data.receipt, gatewayKeys);
      const claims = JSON.parse(new TextDecoder().decode(payload));
      const digest = received.digest("base64url");
      // Acknowledge: our detached JWS over the receipt's exact bytes.
      const compact = await new CompactSign(new TextEncoder().encode(data.receipt))
        .setProtectedHeader({ alg: "EdDSA", kid: jwk.kid, org })
        .sign(key);
      const [header, , sig] = compact.split(".");
      const ack = await fetch(`${url}/v1/contracts/${contract}/acknowledgements`, {
        method: "POST",
        headers: { ...auth, "content-type": "application/json" },
        body: JSON.stringify({ receipt: data.receipt, signature: `${header}..${sig}` }),
      });
      receipts.push({
        typ: protectedHeader.typ, claims, digest, counted: count,
        acknowledged: ack.status, answer: await ack.json(),
      });
      covered += claims.records;
      received = createHash("sha256");
      count = 0;
    }
  }
}
await reader.cancel();
console.log(JSON.stringify({ receipts }));
