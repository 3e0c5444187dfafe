// Who is signed in. Two ways in, chosen by the host (GET /auth/config):
//   {"mode":"dev"}  the embedded default with its generated development key:
//                   POST /dev/token {"sub","role"} -> {"token"}
//   {"mode":"oidc","issuer":URL,"clientId":ID[,"authorizationEndpoint","tokenEndpoint","endSessionEndpoint"]}
//                   OpenID Connect authorization code + PKCE (S256) against Keycloak.
// The access token (and with OIDC its refresh token) is kept in
// sessionStorage (this tab only).
const KEY = 'bnb.token';
let listeners = [];
let config = null;

function b64url(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function claims(tok) {
  try {
    const p = tok.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(decodeURIComponent(escape(atob(p + '==='.slice((p.length + 3) % 4)))));
  } catch { return null; }
}

function roleOf(c) {
  if (!c) return null;
  if (c.role === 'host' || c.role === 'guest') return c.role;
  const roles = (c.realm_access && c.realm_access.roles) || [];
  return roles.includes('host') ? 'host' : roles.includes('guest') ? 'guest' : null;
}

export const auth = {
  token() {
    const t = sessionStorage.getItem(KEY);
    if (!t) return null;
    const c = claims(t);
    if (c && c.exp && c.exp * 1000 < Date.now()) { sessionStorage.removeItem(KEY); return null; }
    return t;
  },
  user() {
    const t = this.token();
    const c = t && claims(t);
    return c ? { sub: c.preferred_username || c.sub, id: c.sub, role: roleOf(c) } : null;
  },
  set(tok, refresh) {
    sessionStorage.setItem(KEY, tok);
    if (refresh) sessionStorage.setItem(KEY + '.refresh', refresh); else sessionStorage.removeItem(KEY + '.refresh');
    listeners.forEach((f) => f());
  },
  // OIDC: a token about to expire (30 s) is renewed with the refresh token
  // before a request goes out; a failed renewal signs out.
  async fresh() {
    const t = sessionStorage.getItem(KEY);
    const rt = sessionStorage.getItem(KEY + '.refresh');
    const c = t && claims(t);
    if (!rt || !c || !c.exp || c.exp * 1000 - Date.now() > 30000) return;
    const cfg = await this.config();
    try {
      const r = await fetch(cfg.tokenEndpoint || cfg.issuer + '/protocol/openid-connect/token', {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: rt, client_id: cfg.clientId }),
      });
      if (!r.ok) throw new Error('refresh ' + r.status);
      const j = await r.json();
      this.set(j.access_token, j.refresh_token || rt);
    } catch { this.expired(); }
  },
  signOut() {
    sessionStorage.removeItem(KEY + '.refresh');
    sessionStorage.removeItem(KEY);
    listeners.forEach((f) => f());
    if (config && config.mode === 'oidc') {
      const end = config.endSessionEndpoint || config.issuer + '/protocol/openid-connect/logout';
      location.assign(`${end}?client_id=${encodeURIComponent(config.clientId)}&post_logout_redirect_uri=${encodeURIComponent(location.origin + '/')}`);
    }
  },
  expired() {
    sessionStorage.removeItem(KEY + '.refresh');
    if (sessionStorage.getItem(KEY)) { sessionStorage.removeItem(KEY); listeners.forEach((f) => f('expired')); }
  },
  onChange(f) { listeners.push(f); },

  async config() {
    if (config) return config;
    try {
      const r = await fetch('/auth/config', { headers: { Accept: 'application/json' } });
      config = r.ok ? await r.json() : { mode: 'none' };
    } catch { config = { mode: 'none' }; }
    return config;
  },

  async devSignIn(sub, role) {
    const r = await fetch('/dev/token', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ sub, role }),
    });
    const text = await r.text();
    let data = null;
    try { data = JSON.parse(text); } catch { /* not JSON */ }
    if (!r.ok) {
      const e = new Error((data && (data.detail || data.title)) || `HTTP ${r.status}`);
      e.status = r.status;
      e.problem = data || {};
      throw e;
    }
    this.set(data.token || data.access_token);
  },

  // OIDC: go to the authorization endpoint with a PKCE challenge.
  async oidcStart(back) {
    const c = await this.config();
    const verifier = b64url(crypto.getRandomValues(new Uint8Array(32)));
    const state = b64url(crypto.getRandomValues(new Uint8Array(16)));
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
    sessionStorage.setItem('bnb.pkce', JSON.stringify({ verifier, state, back }));
    const ep = c.authorizationEndpoint || c.issuer + '/protocol/openid-connect/auth';
    const q = new URLSearchParams({
      response_type: 'code', client_id: c.clientId, redirect_uri: location.origin + '/',
      scope: 'openid', state, code_challenge: b64url(digest), code_challenge_method: 'S256',
    });
    location.assign(`${ep}?${q}`);
  },

  // OIDC: back from the authorization endpoint with ?code=&state=.
  async oidcFinish() {
    const u = new URL(location.href);
    const code = u.searchParams.get('code');
    if (!code) return null;
    const saved = JSON.parse(sessionStorage.getItem('bnb.pkce') || 'null');
    sessionStorage.removeItem('bnb.pkce');
    history.replaceState(null, '', location.pathname + (saved && saved.back ? saved.back : '#/'));
    if (!saved || saved.state !== u.searchParams.get('state')) throw new Error('state');
    const c = await this.config();
    const ep = c.tokenEndpoint || c.issuer + '/protocol/openid-connect/token';
    const r = await fetch(ep, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'authorization_code', code, redirect_uri: location.origin + '/',
        client_id: c.clientId, code_verifier: saved.verifier,
      }),
    });
    if (!r.ok) throw new Error('token ' + r.status);
    const t = await r.json();
    this.set(t.access_token, t.refresh_token);
    return true;
  },
};
