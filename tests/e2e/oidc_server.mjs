// A real OAuth 2.0 authorization server for the e2e tests: npm `oidc-provider` (9.x) on 127.0.0.1.
//
// Usage: node tests/e2e/oidc_server.mjs '<config JSON>'; prints "listening <issuer>" once it accepts
// connections, and exits when its parent (stdin) goes away. The config:
//   {"port": 41234, "audience": "https://fhir.test/r4", "scopes": ["system/Patient.read", ...],
//    "clients": [{"client_id": "bulk", "jwks": {"keys": [<public JWK>]}, "alg": "RS384",
//                 "default_scopes": ["system/Group.read"]}]}
//
// SMART Backend Services: grant client_credentials, client authentication private_key_jwt (RFC 7523)
// with the client's algorithm, access tokens as RFC 9068 JWTs signed RS384 for the FHIR server's
// audience (resource indicators, the audience being the default resource). `default_scopes` are
// granted whether or not the client asks for them, as IdPs do with a client's default scopes
// (Keycloak, Okta): smart-fetch asks only for its resource types, never for system/Group.read.
import { generateKeyPairSync } from 'node:crypto';

import Provider from 'oidc-provider';

const config = JSON.parse(process.argv[2]);
const issuer = `http://127.0.0.1:${config.port}`;
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'as-rs384', use: 'sig', alg: 'RS384' };
const algs = [...new Set(config.clients.map((c) => c.alg))];

const provider = new Provider(issuer, {
  clients: config.clients.map((c) => ({
    client_id: c.client_id,
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: c.alg,
    jwks: c.jwks,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
  })),
  jwks: { keys: [signingKey] },
  enabledJWA: {
    clientAuthSigningAlgValues: algs,
    idTokenSigningAlgValues: ['RS384'],
  },
  clientDefaults: { id_token_signed_response_alg: 'RS384' },
  scopes: config.scopes,
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => config.audience,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, resource) => {
        if (resource !== config.audience) throw new Provider.errors.InvalidTarget();
        return {
          scope: config.scopes.join(' '),
          audience: config.audience,
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS384' } },
        };
      },
    },
  },
});

// The clients' default scopes join what they ask for at the token endpoint (see above).
const defaults = Object.fromEntries(config.clients.map((c) => [c.client_id, c.default_scopes || []]));
provider.use(async (ctx, next) => {
  if (ctx.method === 'POST' && ctx.path === '/token' && ctx.is('application/x-www-form-urlencoded')) {
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
    const assertion = form.get('client_assertion') || '';
    let clientId = form.get('client_id');
    try {
      clientId ||= JSON.parse(Buffer.from(assertion.split('.')[1], 'base64url').toString()).sub;
    } catch {
      // not a JWT: the provider will refuse the client authentication itself
    }
    const wanted = new Set((form.get('scope') || '').split(' ').filter(Boolean));
    for (const scope of defaults[clientId] || []) wanted.add(scope);
    if (wanted.size) form.set('scope', [...wanted].join(' '));
    ctx.req.body = Object.fromEntries(form);
  }
  await next();
});

// Why a request was refused, on stderr (the tests print it when smart-fetch fails).
for (const event of ['grant.error', 'server_error']) {
  provider.on(event, (_ctx, error) => console.error(`${event}: ${error.message} ${error.error_detail || ''}`));
}

const server = provider.listen(config.port, '127.0.0.1', () => {
  console.log(`listening ${issuer}`);
});
process.stdin.on('end', () => server.close(() => process.exit(0)));
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
