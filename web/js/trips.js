// Guests: my trips (GET /reservations, paged) with status, payment and cancel.
import { h, announce } from './dom.js';
import { t, money } from './i18n.js';
import { get, qs, Action } from './api.js';
import { heading, badge, payBadge, confirmDialog, stackTable } from './ui.js';
import { waitState } from './room.js';

const roomNames = new Map();
export async function roomName(id) {
  if (!roomNames.has(id)) roomNames.set(id, get('/rooms/' + encodeURIComponent(id)).then((r) => r.name).catch(() => id));
  return roomNames.get(id);
}

export async function paymentOf(resvId) {
  try {
    const page = await get('/payments' + qs({ reservationId: resvId, limit: 1 }));
    return page.items[0] || null;
  } catch { return null; }
}

export function tripsView(ctx) {
  const root = h('section', heading(t('trips_title')));
  if (!ctx.user || ctx.user.role !== 'guest') {
    root.append(h('p', h('a', { href: '#/signin?back=%23%2Ftrips' }, t('need_signin'))));
    return root;
  }
  let alive = true;
  ctx.onCleanup(() => { alive = false; });
  const { table, body } = stackTable(t('trips_title'), [t('room'), t('dates'), t('guests'), t('amount'), t('status'), t('payment'), t('actions')]);
  const more = h('button', { type: 'button', hidden: true }, t('more'));
  const status = h('p.muted', { role: 'status' }, t('loading'));
  root.append(status, table, more);
  let next = null;

  function row(r) {
    const name = h('a', { href: `#/room/${encodeURIComponent(r.roomId)}` }, r.roomId);
    roomName(r.roomId).then((n) => { name.textContent = n; });
    const st = h('td', badge(r.status));
    const pay = h('td');
    const act = h('td');
    const tr = h('tr', { 'data-id': r.id }, h('th', { scope: 'row' }, name), h('td', `${r.checkIn} → ${r.checkOut}`),
      h('td', r.guests), h('td', money(r.amount || 0)), st, pay, act);
    const showPay = () => paymentOf(r.id).then((p) => pay.replaceChildren(payBadge(p && p.status)));
    showPay();
    const today = new Date().toISOString().slice(0, 10);
    if (r.status === 'CONFIRMED' && r.checkIn > today) {
      const action = new Action();
      const btn = h('button.danger', { type: 'button', 'aria-label': `${t('cancel_trip')}: ${r.checkIn} → ${r.checkOut}` }, t('cancel_trip'));
      btn.addEventListener('click', async () => {
        if (!await confirmDialog(t('cancel_trip'), t('cancel_q', { amount: money(r.amount || 0) }), t('cancel_trip'), t('keep'))) return;
        btn.disabled = true;
        try {
          const res = await action.send('DELETE', '/reservations/' + encodeURIComponent(r.id));
          st.replaceChildren(badge((res.data && res.data.status) || 'CANCEL_REQUESTED'));
          act.replaceChildren();
          waitState(r.id, 'CANCEL_REQUESTED', () => alive, (n) => {
            st.replaceChildren(badge(n.status));
            showPay().then(() => announce(t('cancelled_ok')));
          });
        } catch (e) {
          btn.disabled = false;
          act.append(h('p.err', { role: 'alert' }, e.status ? (e.problem.detail || e.message) : t('retry_net')));
        }
      });
      act.append(btn);
    } else if (r.status === 'CONFIRMED' && r.checkOut <= today) {
      act.append(h('a', { href: `#/room/${encodeURIComponent(r.roomId)}?review=1` }, t('write_review')));
    }
    if (r.status === 'PENDING' || r.status === 'CANCEL_REQUESTED')
      waitState(r.id, r.status, () => alive, (n) => { st.replaceChildren(badge(n.status)); showPay(); });
    return tr;
  }

  async function load(cursor) {
    try {
      const page = await get('/reservations' + qs({ limit: 20, cursor }));
      for (const r of page.items) body.append(row(r));
      next = page.next;
      more.hidden = !next;
      status.textContent = body.children.length ? '' : t('none');
    } catch (e) {
      status.textContent = e.status ? (e.problem.detail || e.message) : t('retry_net');
    }
  }
  more.addEventListener('click', () => load(next));
  load(null);
  return root;
}
