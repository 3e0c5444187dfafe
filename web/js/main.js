// BearBnB web app: a hash router over plain ES modules (no build step).
import { h, announce } from './dom.js';
import { t, getLang, setLang } from './i18n.js';
import { auth } from './auth.js';
import { searchView } from './search.js';
import { roomView } from './room.js';
import { tripsView } from './trips.js';
import { hostRoomsView, hostResvView } from './host.js';
import { dashView } from './dash.js';
import { signinView } from './signin.js';

const routes = [
  [/^\/?$/, searchView, 'nav_search'],
  [/^\/search$/, searchView, 'nav_search'],
  [/^\/room\/([^/]+)$/, roomView, null],
  [/^\/trips$/, tripsView, 'nav_trips'],
  [/^\/host\/rooms$/, hostRoomsView, 'nav_rooms'],
  [/^\/host\/reservations$/, hostResvView, 'nav_resv'],
  [/^\/dashboard$/, dashView, 'nav_dash'],
  [/^\/signin$/, signinView, 'signin'],
];

let cleanup = null;
let first = true;

export function go(hash) {
  if (location.hash === hash) render(); else location.hash = hash;
}

function parse() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, query] = raw.split('?');
  return { path, params: new URLSearchParams(query || '') };
}

function nav() {
  const u = auth.user();
  const { path } = parse();
  const link = (href, key) => h('a', { href, 'aria-current': ('#' + path === href || (href === '#/' && path === '/search')) ? 'page' : null }, t(key));
  const links = [link('#/', 'nav_search')];
  if (u && u.role === 'guest') links.push(link('#/trips', 'nav_trips'));
  if (u && u.role === 'host') links.push(link('#/host/rooms', 'nav_rooms'), link('#/host/reservations', 'nav_resv'));
  links.push(link('#/dashboard', 'nav_dash'));
  document.getElementById('nav').replaceChildren(...links);
  const who = document.getElementById('who');
  who.replaceChildren(u
    ? h('span', h('span.user', t('signed_as', { name: u.sub, role: t('role_' + u.role) })), ' ',
        h('button.link', { type: 'button', onclick: () => { auth.signOut(); go('#/'); } }, t('signout')))
    : h('a', { href: '#/signin?back=' + encodeURIComponent(location.hash || '#/') }, t('signin')));
  const lang = document.getElementById('lang');
  lang.textContent = t('lang');
  lang.setAttribute('aria-label', `${t('lang')}: ${t('langLabel')}`);
  lang.setAttribute('lang', getLang() === 'ko' ? 'en' : 'ko');
  document.getElementById('skip').textContent = t('skip');
}

async function render() {
  if (cleanup) { try { cleanup(); } catch { /* view already gone */ } cleanup = null; }
  const { path, params } = parse();
  const main = document.getElementById('main');
  nav();
  let view = null, m = null, title = 'BearBnB';
  for (const [re, v, key] of routes) if ((m = re.exec(path))) { view = v; if (key) title = t(key) + ' · BearBnB'; break; }
  if (!view) { go('#/'); return; }
  const ctx = { params, arg: m[1] && decodeURIComponent(m[1]), user: auth.user(), onCleanup: (f) => { cleanup = f; }, go };
  const node = view(ctx);
  main.replaceChildren(node);
  const h1 = main.querySelector('h1');
  document.title = h1 ? `${h1.textContent} · BearBnB` : title;
  if (!first && h1) h1.focus();
  first = false;
}

document.getElementById('lang').addEventListener('click', () => {
  setLang(getLang() === 'ko' ? 'en' : 'ko');
  render();
  document.getElementById('lang').focus();
});
document.getElementById('skip').addEventListener('click', (e) => {
  e.preventDefault();
  document.getElementById('main').focus();
});
auth.onChange((why) => {
  nav();
  if (why === 'expired') announce(t('expired'));
});
window.addEventListener('hashchange', render);

(async () => {
  try { await auth.oidcFinish(); } catch (e) { console.error('sign-in failed', e); }
  render();
})();
