// The dashboard: every room's read model (GET /dashboard/rooms, paged),
// updated live from Server-Sent Events (GET /dashboard/stream; EventSource
// resumes with Last-Event-ID by itself). Without the stream it refreshes
// the rows it shows every few seconds.
import { h, announce } from './dom.js';
import { t, money } from './i18n.js';
import { get, qs } from './api.js';
import { heading, badge, payBadge, stackTable } from './ui.js';

export function dashView(ctx) {
  const root = h('section', heading(t('dash_title')), h('p', t('dash_intro')));
  const live = h('p.live', { role: 'status', 'data-state': 'connecting' }, t('live_off'));
  const { table, body } = stackTable(t('dash_title'),
    [t('room'), t('city'), t('status'), t('bookings'), t('reviews_n'), t('rating_h'), t('actions')], 'dash');
  const more = h('button', { type: 'button', hidden: true }, t('more'));
  root.append(live, table, more);
  const rows = new Map();
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
    const open = tr.nextElementSibling && tr.nextElementSibling.classList.contains('detail') ? tr.nextElementSibling : null;
    tr.replaceChildren(...cells(r));
    if (open) { open.remove(); }
    if (fromEvent) {
      tr.classList.remove('flash');
      void tr.offsetWidth;
      tr.classList.add('flash');
      tr.dataset.updated = String(Date.now());
    }
  }

  async function toggle(id, btn) {
    const tr = rows.get(id);
    const open = tr.nextElementSibling && tr.nextElementSibling.classList.contains('detail');
    if (open) { tr.nextElementSibling.remove(); btn.setAttribute('aria-expanded', 'false'); return; }
    const cell = h('td', { colspan: 7 }, t('loading'));
    tr.after(h('tr.detail', cell));
    btn.setAttribute('aria-expanded', 'true');
    try {
      const page = await get(`/dashboard/rooms/${encodeURIComponent(id)}/reservations` + qs({ limit: 20 }));
      cell.replaceChildren(page.items.length
        ? h('ul', page.items.map((x) => h('li', `${x.checkIn} → ${x.checkOut} · ${x.guestId || ''} · ${money(x.amount || 0)} `, badge(x.status), ' ', payBadge(x.paymentStatus))))
        : t('none'));
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
          if (e.status === 404 && rows.has(x)) { rows.get(x).remove(); rows.delete(x); }
        }
      }
    }, 150);
  }
  // `room`: the room's public summary (its read model); `reservation`: a
  // reservation view (only to the room's host and its guest) naming its
  // room; `reset`: the stream lost its place, so reload; unnamed events
  // name a room somehow (roomId, subject or id).
  function parse(ev) { try { return JSON.parse(ev.data); } catch { return null; } }
  function onRoom(ev) {
    const r = parse(ev);
    if (!r || !r.id) return;
    if (r.status === 'DELETED') { if (rows.has(r.id)) { rows.get(r.id).remove(); rows.delete(r.id); } return; }
    if (r.name) { put(r, true); announce(t('updated', { name: r.name })); } else refresh(r.id);
  }
  function onOther(ev) {
    const d = parse(ev);
    const id = d && (d.roomId || d.subject || d.id);
    if (id) refresh(id);
  }
  let es = null, poll = null, failures = 0;
  function startPoll() {
    live.dataset.state = 'polling';
    live.textContent = t('live_poll');
    poll = setInterval(() => { for (const id of rows.keys()) refresh(id); load(null).catch(() => {}); }, 4000);
  }
  if ('EventSource' in window) {
    es = new EventSource('/dashboard/stream');
    es.onopen = () => { failures = 0; live.dataset.state = 'live'; live.textContent = t('live_on'); };
    es.onmessage = onOther;
    es.addEventListener('room', onRoom);
    es.addEventListener('reservation', onOther);
    es.addEventListener('reset', () => { load(null).catch(() => {}); });
    es.onerror = () => {
      live.dataset.state = 'connecting';
      live.textContent = t('live_off');
      // CLOSED: the host refused the stream (no such route, 429, 503);
      // otherwise EventSource reconnects by itself with Last-Event-ID.
      if (es.readyState === EventSource.CLOSED || ++failures > 5) { es.close(); es = null; startPoll(); }
    };
  } else startPoll();
  ctx.onCleanup(() => { if (es) es.close(); if (poll) clearInterval(poll); if (timer) clearTimeout(timer); });

  load(null).catch((e) => { live.textContent = e.status ? (e.problem.detail || e.message) : t('retry_net'); });
  return root;
}
