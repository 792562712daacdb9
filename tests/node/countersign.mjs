// A partner countersigning an offer with nothing but Node 20 and the `jose` package:
// token (RFC 7523 client assertion), catalog, offer, the provider's signature verified
// against the published JWKS, its own detached JWS posted, then the first record streamed.
// Usage: node countersign.mjs <gateway-url> <org> <private-jwks-file>; prints one JSON line.
import { createHash } from "node:crypto";
import { CompactSign, compactVerify, createLocalJWKSet } from "jose";
import { json, partner } from "./partner.mjs";

const [url, org, keyFile] = process.argv.slice(2);
const { jwk, key, auth } = await partner(url, org, keyFile);

// The catalog links the offer; the offer carries the exact bytes to sign.
const catalog = await json(await fetch(`${url}/v1/catalog`, { headers: auth }));
const offered = catalog.contracts.find((c) => c.offer);
const offer = await json(await fetch(`${url}${offered.offer}`, { headers: auth }));
const payload = Buffer.from(offer.payload, "base64url");
const digest = "sha256:" + createHash("sha256").update(payload).digest("hex");
if (digest !== offer.version) throw new Error(`payload hashes to ${digest}, not ${offer.version}`);
const terms = JSON.parse(payload.toString("utf8")); // what we are about to sign, readable

// The provider's signature, re-attached and verified against its published keys.
const providerKeys = createLocalJWKSet(await json(
  await fetch(`${url}/v1/organisations/${offer.provider}/jwks`, { headers: auth }),
));
const verified = [];
for (const signature of offer.signatures) {
  const [header, , sig] = signature.split(".");
  const { protectedHeader } = await compactVerify(`${header}.${offer.payload}.${sig}`, providerKeys);
  verified.push(protectedHeader.org);
}

// Our countersignature: a compact JWS over the payload, the payload then left out.
const compact = await new CompactSign(payload)
  .setProtectedHeader({ alg: "EdDSA", kid: jwk.kid, org })
  .sign(key);
const [header, , sig] = compact.split(".");
const response = await fetch(`${url}${offer.sign_at}`, {
  method: "POST",
  headers: { ...auth, "content-type": "application/json" },
  body: JSON.stringify({ version: offer.version, signature: `${header}..${sig}` }),
});
const accepted = await response.json();

// The contract is in force: its first record, over SSE.
let record = null;
if (response.ok) {
  const stream = await fetch(`${url}/v1/contracts/${offer.contract}/stream?from=earliest`, {
    headers: { ...auth, accept: "text/event-stream" },
  });
  const reader = stream.body.getReader();
  let text = "";
  while (record === null) {
    const { value, done } = await reader.read();
    if (done) break;
    text += Buffer.from(value).toString("utf8");
    const event = text.split("\n\n").find((e) => e.startsWith("event: record"));
    if (event) record = JSON.parse(event.split("\n").find((l) => l.startsWith("data:")).slice(5));
  }
  await reader.cancel();
}
console.log(JSON.stringify({
  contract: offer.contract, purpose: terms.purpose, provider_signed: verified,
  status: response.status, accepted, record,
}));
