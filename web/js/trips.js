// Guests: my trips (GET /reservations, paged) with status, payment and cancel.
import { h, announce } from './dom.js';
import { t, money } from './i18n.js';
import { Action } from './api.js';
import { heading, badge, confirmDialog, stackTable, roomLink, payCell, pager } from './ui.js';
import { waitState } from './room.js';

export function tripsView(ctx) {
  const root = h('section', heading(t('trips_title')));
  if (!ctx.user || ctx.user.role !== 'guest') {
    root.append(h('p', h('a', { href: '#/signin?back=%23%2Ftrips' }, t('need_signin'))));
    return root;
  }
  let alive = true;
  ctx.onCleanup(() => { alive = false; });
  const { table, body } = stackTable(t('trips_title'), [t('room'), t('dates'), t('guests'), t('amount'), t('status'), t('payment'), t('actions')]);
  function row(r) {
    const st = h('td', badge(r.status));
    const { td: pay, show: showPay } = payCell(r.id);
    const act = h('td');
    const tr = h('tr', { 'data-id': r.id }, h('th', { scope: 'row' }, roomLink(r.roomId)), h('td', `${r.checkIn} → ${r.checkOut}`),
      h('td', r.guests), h('td', money(r.amount || 0)), st, pay, act);
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

  const { status, more } = pager('/reservations', {}, (r) => body.append(row(r)), () => body.children.length);
  root.append(status, table, more);
  return root;
}
