// OpenID Provider for ikepki's tests: oidc-provider 9 with the device flow (RFC 8628),
// back-channel logout and test users with groups. Usage: node idp.mjs PORT BACKCHANNEL_LOGOUT_URI
// Prints "READY <issuer>" when listening. Users: alice (vpn-staff), bob (vpn-contractors),
// carol (email not verified), dave (no VPN group); for the web console erin (pki-admins),
// grace (secops) and frank (pki-helpdesk). The dev login form accepts any password.
// With IDP_CONSOLE_REDIRECT (and IDP_CONSOLE_SECRET) set, a second client "ikepki-console" uses the
// authorization code flow, PKCE required, client_secret_basic at the token endpoint.
import { generateKeyPair, exportJWK } from 'jose';
import Provider from 'oidc-provider';

const port = Number(process.argv[2]);
const logoutUri = process.argv[3];
const issuer = `http://127.0.0.1:${port}`;

const USERS = {
  alice: { email: 'alice@example.test', email_verified: true, groups: ['vpn-staff', 'everyone'] },
  bob: { email: 'bob@example.test', email_verified: true, groups: ['vpn-contractors'] },
  carol: { email: 'carol@example.test', email_verified: false, groups: ['vpn-staff'] },
  dave: { email: 'dave@example.test', email_verified: true, groups: ['everyone'] },
  erin: { email: 'erin@example.test', email_verified: true, groups: ['pki-admins', 'everyone'] },
  grace: { email: 'grace@example.test', email_verified: true, groups: ['secops', 'pki-helpdesk'] },
  frank: { email: 'frank@example.test', email_verified: true, groups: ['pki-helpdesk'] },
};
const consoleRedirect = process.env.IDP_CONSOLE_REDIRECT;
const consoleClients = consoleRedirect ? [{
  client_id: 'ikepki-console',
  client_secret: process.env.IDP_CONSOLE_SECRET,
  token_endpoint_auth_method: 'client_secret_basic',
  grant_types: ['authorization_code'],
  response_types: ['code'],
  redirect_uris: [consoleRedirect],
  id_token_signed_response_alg: 'ES256',
}] : [];

const rsa = await generateKeyPair('RS256', { extractable: true });
const ec = await generateKeyPair('ES256', { extractable: true });
const keys = [
  { ...(await exportJWK(rsa.privateKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' },
  { ...(await exportJWK(ec.privateKey)), kid: 'ec-1', alg: 'ES256', use: 'sig' },
];

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'ikepki-vpn',
    token_endpoint_auth_method: 'none',
    grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
    response_types: [],
    redirect_uris: [],
    id_token_signed_response_alg: process.env.IDP_ID_TOKEN_ALG || 'RS256',
    backchannel_logout_uri: logoutUri,
    backchannel_logout_session_required: true,
  }, ...consoleClients],
  jwks: { keys },
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    backchannelLogout: { enabled: true },
  },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'], profile: ['name'] },
  conformIdTokenClaims: false, // scope claims (email, groups) in the ID token
  ttl: { DeviceCode: 600, IdToken: 3600, AccessToken: 3600, Session: 3600, Grant: 3600, Interaction: 600 },
  async findAccount(ctx, id) {
    const user = USERS[id];
    if (!user) return undefined;
    return { accountId: id, async claims() { return { sub: id, name: id, ...user }; } };
  },
  // the provider refuses to POST logout tokens to special-use addresses such as 127.0.0.1
  fetch: (url, options) => { delete options.dispatcher; return globalThis.fetch(url, options); },
  pkce: { required: (ctx, client) => client.clientId === 'ikepki-console' },
});
provider.proxy = false;
provider.listen(port, '127.0.0.1', () => { console.log(`READY ${issuer}`); });
