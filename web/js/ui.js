// Shared view helpers: problem+json next to what caused it, drafts that
// survive a failed submit or a language switch, status badges, dialogs.
import { h, showError, clearErrors } from './dom.js';
import { t, money } from './i18n.js';
import { get, qs } from './api.js';

// Which form field a problem detail is about: a quoted field name
// ('checkIn'), else a word that names it.
const WORDS = {
  card: /\bcard\b/i, guests: /\bguests?\b|capacity/i, checkIn: /check-?in|already booked|nights|stay|dates?\b/i,
  checkOut: /check-?out/i, rating: /\brating\b/i, content: /\bcontent\b/i, city: /\bcity\b/i,
  name: /\bname\b/i, pricePerNight: /price/i, capacity: /capacity/i, description: /description/i,
  minPrice: /minPrice/, maxPrice: /maxPrice/, sub: /\bsub\b|name/i, role: /\brole\b/i,
};

export function fieldOf(form, detail) {
  const names = [...form.querySelectorAll('[data-field]')].map((e) => e.dataset.field);
  const q = /'([A-Za-z]+)'/g;
  let m;
  while ((m = q.exec(detail || ''))) if (names.includes(m[1])) return m[1];
  for (const n of names) if (WORDS[n] && WORDS[n].test(detail || '')) return n;
  return null;
}

// Show an ApiError on `form`: next to the field it names, or above the button.
export function showProblem(form, e, msg) {
  clearErrors(form);
  if (!e.status) return showError(form, null, t('retry_net'));
  const detail = (e.problem && (e.problem.detail || e.problem.title)) || e.message;
  const text = msg || (e.status >= 500 || !detail ? t('err_generic', { status: e.status, detail: detail || '' }) : detail);
  return showError(form, fieldOf(form, detail), text);
}

// Drafts: what was typed in a form, kept in memory for the page's life.
const drafts = new Map();
export function persist(form, key) {
  const d = drafts.get(key);
  if (d) for (const el of form.elements) if (el.name && el.name in d) {
    if (el.type === 'radio') el.checked = el.value === d[el.name]; else el.value = d[el.name];
  }
  form.addEventListener('input', () => {
    const o = {};
    for (const el of form.elements) if (el.name && (el.type !== 'radio' || el.checked)) o[el.name] = el.value;
    drafts.set(key, o);
  });
}
export const forget = (key) => drafts.delete(key);

export const badge = (st) => h('span.badge.st-' + st, t('st_' + st));
export const payBadge = (st) => (st ? h('span.badge.pay-' + st, t('pay_' + st)) : '');

// A link to a room, showing its id until its name is known (asked once).
const roomNames = new Map();
export function roomLink(id) {
  if (!roomNames.has(id)) roomNames.set(id, get('/rooms/' + encodeURIComponent(id)).then((r) => r.name).catch(() => id));
  const a = h('a', { href: `#/room/${encodeURIComponent(id)}` }, id);
  roomNames.get(id).then((n) => { a.textContent = n; });
  return a;
}

// A table cell with a reservation's payment state; show() asks again.
export function payCell(resvId) {
  const td = h('td');
  const show = () => get('/payments' + qs({ reservationId: resvId, limit: 1 }))
    .then((page) => page.items[0] || null, () => null)
    .then((p) => td.replaceChildren(payBadge(p && p.status)));
  show();
  return { td, show };
}

// A paged list (`{items, next}`, 20 a page): the first page at once, the
// next on "Show more". `status` says loading, nothing, or what went wrong.
export function pager(path, params, add, count) {
  const status = h('p.muted', { role: 'status' }, t('loading'));
  const more = h('button', { type: 'button', hidden: true }, t('more'));
  let next = null;
  async function load(cursor) {
    try {
      const page = await get(path + qs({ ...params, limit: 20, cursor }));
      for (const x of page.items) add(x);
      next = page.next;
      more.hidden = !next;
      status.textContent = count() ? '' : t('none');
    } catch (e) {
      status.textContent = e.status ? (e.problem.detail || e.message) : t('retry_net');
    }
  }
  more.addEventListener('click', () => load(next));
  load(null);
  return { status, more };
}

export function ratingText(r) {
  if (!r.reviewCnt) return t('no_rating');
  return t(r.reviewCnt === 1 ? 'rating1' : 'rating', { r: Number(r.rating).toFixed(1), n: r.reviewCnt });
}

export const nights = (a, b) => Math.round((Date.parse(b) - Date.parse(a)) / 86400000);
export const priceText = (p) => t('per_night', { price: money(p) });

export function heading(text) {
  return h('h1', { tabindex: -1 }, text);
}

// A modal confirmation (<dialog>): resolves true when confirmed.
export function confirmDialog(title, body, yes, no) {
  return new Promise((resolve) => {
    const d = h('dialog.confirm', { 'aria-labelledby': 'dlg-t', 'aria-describedby': 'dlg-b' },
      h('h2#dlg-t', title), h('p#dlg-b', body),
      h('div.row',
        h('button.danger', { type: 'button', onclick: () => done(true) }, yes),
        h('button', { type: 'button', onclick: () => done(false) }, no)));
    const back = document.activeElement;
    function done(v) { d.close(); d.remove(); if (back && back.focus) back.focus(); resolve(v); }
    d.addEventListener('cancel', (ev) => { ev.preventDefault(); done(false); });
    document.body.append(d);
    d.showModal();
    d.querySelector('button:last-child').focus();
  });
}

// A table that becomes a stack of cards at phone width (CSS .stack): each
// cell gets its column's name (data-label) and explicit table roles, since
// display:block drops a table's semantics in some browsers.
export function stackTable(caption, cols, id) {
  const body = h('tbody', { role: 'rowgroup' });
  const label = (tr) => {
    tr.setAttribute('role', 'row');
    [...tr.cells].forEach((c, i) => {
      c.setAttribute('role', c.tagName === 'TH' ? 'rowheader' : 'cell');
      if (c.colSpan > 1) return;
      c.dataset.label = cols[i] || '';
    });
  };
  new MutationObserver((ms) => {
    for (const m of ms) {
      if (m.target.tagName === 'TR') label(m.target);
      for (const n of m.addedNodes) if (n.tagName === 'TR') label(n);
    }
  }).observe(body, { childList: true, subtree: true });
  const table = h('div.scroll.stack', { tabindex: 0, role: 'region', 'aria-label': caption },
    h('table', { id, role: 'table' }, h('caption.sr', caption),
      h('thead', { role: 'rowgroup' }, h('tr', { role: 'row' }, cols.map((c) => h('th', { scope: 'col', role: 'columnheader' }, c)))), body));
  return { table, body };
}
