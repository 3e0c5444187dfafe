// The web app's OpenID Connect sign-in (authorization code + PKCE) against
// the real Keycloak (suite infra; scripts/test starts it and exports
// BNB_TEST_KEYCLOAK_URL): a temporary realm made from
// scripts/infra.d/keycloak-realm.json whose `bearbnb-web` client allows this
// test's host as redirect URI; bearbnb trusts that realm (auth.issuer,
// auth.jwks_url); the app, told so by GET /auth/config, sends the browser to
// Keycloak, bob signs in there with his password, comes back signed in as a
// guest and his API calls pass the gateway with Keycloak's token.
// Exit 0 passed, 1 failed, 77 skipped (no Chromium / npm packages, unless
// BNB_WEB_REQUIRED=1).
import { readFileSync } from 'node:fs';
import { browserKit } from './lib.mjs';
import { startHost, freePort } from './host.mjs';

const { say, check, shot, axe, launch } = browserKit('oidc');
const KC = process.env.BNB_TEST_KEYCLOAK_URL;
const realmFile = process.env.BNB_KEYCLOAK_REALM_FILE;
if (!KC || !realmFile) {
  console.log('BNB_TEST_KEYCLOAK_URL is not set: run `scripts/infra up keycloak` and `eval "$(scripts/infra env)"` (scripts/test does both)');
  process.exit(1);
}
const realm = `bearbnb-web-${process.pid}`;

async function adminToken() {
  const r = await fetch(`${KC}/realms/master/protocol/openid-connect/token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'password', client_id: 'admin-cli',
      username: process.env.BNB_TEST_KEYCLOAK_ADMIN || 'admin',
      password: process.env.BNB_TEST_KEYCLOAK_ADMIN_PASSWORD || 'admin',
    }),
  });
  if (!r.ok) throw new Error(`Keycloak admin token: HTTP ${r.status}`);
  return (await r.json()).access_token;
}

let host, browser, created = false;
async function main() {
  // the realm first (the host is not ready until it can load the realm's
  // keys), its web client allowing the port the host will listen on
  const issuer = `${KC}/realms/${realm}`;
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const r = JSON.parse(readFileSync(realmFile, 'utf8'));
  r.realm = realm;
  const web = r.clients.find((c) => c.clientId === 'bearbnb-web');
  web.redirectUris = [`${url}/*`];
  web.attributes['post.logout.redirect.uris'] = `${url}/*`;
  const admin = await adminToken();
  const cr = await fetch(`${KC}/admin/realms`, {
    method: 'POST', headers: { Authorization: 'Bearer ' + admin, 'Content-Type': 'application/json' }, body: JSON.stringify(r),
  });
  check(cr.status === 201, `realm ${realm} created in Keycloak (HTTP ${cr.status})`);
  created = true;
  host = await startHost({ BEARBNB_AUTH_ISSUER: issuer, BEARBNB_AUTH_JWKS_URL: `${issuer}/protocol/openid-connect/certs` }, port);
  const cfg = await fetch(host.url + '/auth/config').then((x) => (x.ok ? x.json() : null)).catch(() => null);
  check(!!cfg && cfg.mode === 'oidc', `the host's GET /auth/config offers OIDC (${JSON.stringify(cfg)})`);
  check(cfg.issuer === issuer && !!cfg.clientId, `GET /auth/config: ${JSON.stringify(cfg)}`);

  browser = await launch();
  const page = await (await browser.newContext({ viewport: { width: 1000, height: 800 }, locale: 'en-US' })).newPage();
  page.setDefaultTimeout(20000);
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(host.url + '/#/signin?back=%23%2Ftrips');
  const btn = page.getByRole('button', { name: 'Sign in with Keycloak' });
  await btn.waitFor();
  check(await page.getByText('Development sign-in').count() === 0, 'no development sign-in with Keycloak configured');
  await axe(page, 'OIDC sign-in');
  await shot(page, 'oidc-sign-in');
  await btn.click();
  await page.waitForURL((u) => u.href.startsWith(issuer + '/protocol/openid-connect/auth'));
  const q = new URL(page.url()).searchParams;
  check(q.get('code_challenge_method') === 'S256' && (q.get('code_challenge') || '').length === 43 &&
        q.get('response_type') === 'code' && q.get('redirect_uri') === host.url + '/' && !!q.get('state'),
  'the app asks Keycloak for an authorization code with a PKCE S256 challenge and a state');
  await page.locator('#username').fill('bob');
  await page.locator('#password').fill('bob');
  await shot(page, 'keycloak-login');
  await page.locator('#kc-login').click();
  await page.waitForURL((u) => u.href.startsWith(host.url));
  await page.getByText('bob (guest)').waitFor();
  check(!new URL(page.url()).searchParams.get('code'), 'back from Keycloak signed in as bob (guest); the code is gone from the address');
  await page.getByRole('heading', { name: 'My trips' }).waitFor();
  await page.getByText('Nothing here yet.').waitFor();
  check(true, "bob's trips load through the gateway with Keycloak's access token");
  await shot(page, 'oidc-signed-in-trips');
  check(errors.length === 0, 'no script error' + (errors.length ? ': ' + errors.join('; ') : ''));
  return 0;
}

let rc = 1;
try {
  rc = await main();
} catch (e) {
  console.log('FAIL: ' + ((e && e.stack) || e));
}
if (browser) await browser.close().catch(() => {});
if (created) {
  try {
    await fetch(`${KC}/admin/realms/${realm}`, { method: 'DELETE', headers: { Authorization: 'Bearer ' + (await adminToken()) } });
  } catch { /* the realm stays; its name says whose it is */ }
}
if (host) {
  const code = await host.stop();
  if (code !== 0) { rc = 1; console.log(`bearbnb exited ${code}\n` + host.tail()); } else if (rc === 1) console.log('host log tail:\n' + host.tail());
  host.cleanup();
}
if (rc !== 77) console.log(`${rc ? 0 : 1} passed, ${rc ? 1 : 0} failed`);
process.exit(rc);
