// What every Node partner script needs: its Ed25519 key, a token (RFC 7523 client assertion),
// and JSON answers that throw on a problem. Only Node 20 and the `jose` package.
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { SignJWT, importJWK } from "jose";

export async function json(response) {
  const body = await response.json();
  if (!response.ok) throw new Error(`${response.status} ${JSON.stringify(body)}`);
  return body;
}

export async function partner(url, org, keyFile) {
  const jwk = JSON.parse(readFileSync(keyFile, "utf8")).keys.find(
    (k) => k.crv === "Ed25519" && k.use === "sig",
  );
  const key = await importJWK(jwk, "EdDSA");
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
  return { jwk, key, auth: { authorization: `Bearer ${token.access_token}` } };
}
