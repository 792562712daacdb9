// A partner countersigning an offer with nothing but Node 20 and the `jose` package:
// token (RFC 7523 client assertion), catalog, offer, the provider's signature verified
// against the published JWKS, its own detached JWS posted, then the first record streamed.
// Usage: node countersign.mjs <gateway-url> <org> <private-jwks-file>; prints one JSON line.
import { createHash, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { CompactSign, SignJWT, compactVerify, createLocalJWKSet, importJWK } from "jose";

const [url, org, keyFile] = process.argv.slice(2);
const jwk = JSON.parse(readFileSync(keyFile, "utf8")).keys.find(
  (k) => k.crv === "Ed25519" && k.use === "sig",
);
const key = await importJWK(jwk, "EdDSA");

async function json(response) {
  const body = await response.json();
  if (!response.ok) throw new Error(`${response.status} ${JSON.stringify(body)}`);
  return body;
}

const tokenUrl = `${url}/oauth/token`;
const assertion = await new SignJWT({})
  .setProtectedHeader({ alg: "EdDSA", kid: jwk.kid })
  .setIssuer(org).setSubject(org).setAudience(tokenUrl)
  .setIssuedAt().setExpirationTime("1m").setJti(randomUUID())
  .sign(key);
const token = await json(await fetch(tokenUrl, {
  method: "POST",
  headers: { "content-type": "application/x-www-form-urlencoded" },
  body: new URLSearchParams({
    grant_type: "client_credentials",
    client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    client_assertion: assertion,
  }),
}));
const auth = { authorization: `Bearer ${token.access_token}` };

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
