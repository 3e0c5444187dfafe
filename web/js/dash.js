// The dashboard: every room's read model (GET /dashboard/rooms, paged),
// updated live from Server-Sent Events (GET /dashboard/stream). Signed in,
// the stream carries the user's token (?access_token=, EventSource cannot
// send headers), so a host sees the reservations of their rooms and a guest
// their own change live in the open "Reservations" rows; anonymous, only the
// public room summaries come. The browser reconnects by itself with
// Last-Event-ID; when the host refuses the stream (an expired token: 401,
// 429, 503) the page opens it again with a fresh token and ?lastEventId=,
// so nothing between is missed. Without the stream it polls every 4 s.
import { h, announce } from './dom.js';
import { t, money } from './i18n.js';
import { get, qs } from './api.js';
import { auth } from './auth.js';
import { heading, badge, payBadge, stackTable } from './ui.js';

export function dashView(ctx) {
  const root = h('section', heading(t('dash_title')), h('p', t('dash_intro')));
  const live = h('p.live', { role: 'status', 'data-state': 'connecting' }, t('live_off'));
  const { table, body } = stackTable(t('dash_title'),
    [t('room'), t('city'), t('status'), t('bookings'), t('reviews_n'), t('rating_h'), t('actions')], 'dash');
  const more = h('button', { type: 'button', hidden: true }, t('more'));
  root.append(live, table, more);
  const rows = new Map();
  // the open "Reservations" rows: room id -> { tr, list, items: reservation id -> li }
  const details = new Map();
  let next = null;

  function cells(r) {
    return [h('th', { scope: 'row' }, h('a', { href: `#/room/${encodeURIComponent(r.id)}` }, r.name || r.id)),
      h('td', r.city || ''), h('td', r.status || ''), h('td.n', { 'data-k': 'bookingCnt' }, r.bookingCnt ?? 0),
      h('td.n', { 'data-k': 'reviewCnt' }, r.reviewCnt ?? 0),
      h('td.n', { 'data-k': 'rating' }, r.rating == null ? '–' : Number(r.rating).toFixed(1)),
      h('td', ctx.user ? h('button', { type: 'button', 'aria-expanded': 'false', 'aria-label': `${t('show_resv')}: ${r.name || r.id}`, onclick: (ev) => toggle(r.id, ev.currentTarget) }, t('show_resv')) : '')];
  }

  function put(r, fromEvent) {
    let tr = rows.get(r.id);
    if (!tr) {
      if (!fromEvent && r.status === 'DELETED') return;
      tr = h('tr', { 'data-id': r.id });
      rows.set(r.id, tr);
      if (fromEvent) body.prepend(tr); else body.append(tr);
    }
    tr.replaceChildren(...cells(r));
    if (details.has(r.id)) { const b = tr.querySelector('button[aria-expanded]'); if (b) b.setAttribute('aria-expanded', 'true'); }
    if (fromEvent) {
      tr.classList.remove('flash');
      void tr.offsetWidth;
      tr.classList.add('flash');
      tr.dataset.updated = String(Date.now());
    }
  }

  function resvItem(x) {
    return h('li', { 'data-id': x.id }, `${x.checkIn} → ${x.checkOut} · ${x.guestId || ''} · ${money(x.amount || 0)} `,
      badge(x.status), ' ', payBadge(x.paymentStatus));
  }
  // a reservation view (from the list or an event): its line, new ones first
  function putResv(d, x, live) {
    const li = resvItem(x);
    const old = d.items.get(x.id);
    if (old) old.replaceWith(li); else if (live) d.list.prepend(li); else d.list.append(li);
    d.items.set(x.id, li);
    d.cell.replaceChildren(d.list);
  }
  function closeDetail(id) {
    const d = details.get(id);
    if (d) { d.tr.remove(); details.delete(id); }
  }
  async function toggle(id, btn) {
    if (details.has(id)) { closeDetail(id); btn.setAttribute('aria-expanded', 'false'); return; }
    const cell = h('td', { colspan: 7 }, t('loading'));
    const d = { tr: h('tr.detail', { 'data-room': id }, cell), cell, list: h('ul'), items: new Map() };
    details.set(id, d);
    rows.get(id).after(d.tr);
    btn.setAttribute('aria-expanded', 'true');
    await fill(id, d);
  }
  async function fill(id, d) {
    const { cell } = d;
    try {
      const page = await get(`/dashboard/rooms/${encodeURIComponent(id)}/reservations` + qs({ limit: 20 }));
      // events that came in meanwhile are newer than the page
      for (const x of page.items) if (!d.items.has(x.id)) putResv(d, x, false);
      if (!d.items.size) cell.replaceChildren(t('none'));
    } catch (e) {
      cell.textContent = e.status ? (e.problem.detail || e.message) : t('retry_net');
    }
  }

  async function load(cursor) {
    const page = await get('/dashboard/rooms' + qs({ limit: 20, cursor }));
    for (const r of page.items) put(r, false);
    next = page.next;
    more.hidden = !next;
  }
  more.addEventListener('click', () => load(next).catch(() => {}));

  // An event names a room (its id as `id`, `roomId` or `subject`, maybe the
  // whole read-model document): fetch that room's summary and update its row.
  const pending = new Set();
  let timer = null;
  function refresh(id) {
    pending.add(id);
    if (!timer) timer = setTimeout(async () => {
      timer = null;
      const ids = [...pending];
      pending.clear();
      for (const x of ids) {
        try {
          const r = await get('/dashboard/rooms/' + encodeURIComponent(x));
          put(r, true);
          announce(t('updated', { name: r.name || x }));
        } catch (e) {
          if (e.status === 404 && rows.has(x)) drop(x);
        }
      }
    }, 150);
  }
  // `room`: the room's public summary (its read model); `reservation`: a
  // reservation view (only to the room's host and its guest) naming its
  // room; `reset`: the stream lost its place, so reload; unnamed events
  // name a room somehow (roomId, subject or id).
  function drop(id) { closeDetail(id); rows.get(id).remove(); rows.delete(id); }
  let lastId = null;
  function parse(ev) {
    if (ev.lastEventId) lastId = ev.lastEventId;
    try { return JSON.parse(ev.data); } catch { return null; }
  }
  function onRoom(ev) {
    const r = parse(ev);
    if (!r || !r.id) return;
    if (r.status === 'DELETED') { if (rows.has(r.id)) drop(r.id); return; }
    if (r.name) { put(r, true); announce(t('updated', { name: r.name })); } else refresh(r.id);
  }
  function onOther(ev) {
    const d = parse(ev);
    const id = d && (d.roomId || d.subject || d.id);
    if (id) refresh(id);
  }
  // a reservation view: only the room's host and its guest get these
  function onResv(ev) {
    const x = parse(ev);
    if (!x || !x.roomId) return;
    const d = details.get(x.roomId);
    if (d && x.id) { putResv(d, x, true); announce(t('updated', { name: `${x.checkIn} → ${x.checkOut}` })); }
    refresh(x.roomId);
  }
  let es = null, poll = null, refused = 0, again = null, gone = false;
  function startPoll() {
    live.dataset.state = 'polling';
    live.textContent = t('live_poll');
    poll = setInterval(() => { for (const id of rows.keys()) refresh(id); load(null).catch(() => {}); }, 4000);
  }
  async function open() {
    again = null;
    await auth.fresh();
    if (gone) return;
    // ?lastEventId= only for a stream this page opens again: the browser's
    // own reconnects send the Last-Event-ID header, which the host prefers
    es = new EventSource('/dashboard/stream' + qs({ lastEventId: lastId, access_token: auth.token() }));
    es.onopen = () => { refused = 0; live.dataset.state = 'live'; live.textContent = t('live_on'); };
    es.onmessage = onOther;
    es.addEventListener('room', onRoom);
    es.addEventListener('reservation', onResv);
    es.addEventListener('ready', parse);
    es.addEventListener('reset', (ev) => {
      parse(ev);
      load(null).catch(() => {});
      for (const [id, d] of details) { d.items.clear(); d.list.replaceChildren(); fill(id, d); }
    });
    es.onerror = () => {
      live.dataset.state = 'connecting';
      live.textContent = t('live_off');
      // CONNECTING: the browser tries again by itself (with Last-Event-ID).
      // CLOSED: the host refused the stream (401 for an expired token, 429,
      // 503, no such route): open it again after a pause, at most 5 times.
      if (es.readyState !== EventSource.CLOSED) return;
      es.close();
      es = null;
      if (++refused > 5) startPoll();
      else again = setTimeout(() => { open().catch(() => {}); }, 1000 * refused);
    };
  }
  if ('EventSource' in window) open().catch(() => {}); else startPoll();
  ctx.onCleanup(() => { gone = true; if (es) es.close(); if (poll) clearInterval(poll); if (timer) clearTimeout(timer); if (again) clearTimeout(again); });

  load(null).catch((e) => { live.textContent = e.status ? (e.problem.detail || e.message) : t('retry_net'); });
  return root;
}
