// Hosts: my rooms (list, create, edit, delete) and the reservations of my rooms.
import { h, field, formErr, values, clearErrors, showError, announce } from './dom.js';
import { t, money } from './i18n.js';
import { Action } from './api.js';
import { heading, showProblem, persist, forget, ratingText, priceText, confirmDialog, badge, stackTable, roomLink, payCell, pager } from './ui.js';

function needHost(ctx, root) {
  if (ctx.user && ctx.user.role === 'host') return false;
  root.append(h('p', h('a', { href: '#/signin?back=' + encodeURIComponent(location.hash) }, t('need_host'))));
  return true;
}

function roomFields(r = {}, withCity = true) {
  return [
    field(t('room_name'), 'name', { required: true, maxlength: 200, value: r.name || '' }),
    withCity ? field(t('city'), 'city', { required: true, maxlength: 100, value: r.city || '' }) : null,
    field(t('price'), 'pricePerNight', { type: 'number', min: 1, required: true, inputmode: 'numeric', value: r.pricePerNight || '' }),
    field(t('capacity'), 'capacity', { type: 'number', min: 1, max: 50, required: true, inputmode: 'numeric', value: r.capacity || '' }),
    field(t('description'), 'description', { multiline: true, maxlength: 5000, value: r.description || '' }),
  ];
}

function roomBody(v, withCity = true) {
  const b = { name: v.name, description: v.description || '', pricePerNight: Number(v.pricePerNight), capacity: Number(v.capacity) };
  if (withCity) b.city = v.city;
  for (const k of ['pricePerNight', 'capacity']) if (v[k] === '' || !Number.isFinite(b[k])) b[k] = v[k];
  return b;
}

// Client-side check: required fields filled (the server judges the rest).
function missing(form) {
  for (const el of form.querySelectorAll('[required]')) if (!el.value.trim()) {
    showError(form, el.name, t('required', { field: form.querySelector(`label[for="${el.id}"]`).textContent }));
    return true;
  }
  return false;
}

export function hostRoomsView(ctx) {
  const root = h('section', heading(t('rooms_title')));
  if (needHost(ctx, root)) return root;
  const list = h('ul.cards#my-rooms');

  // create
  const createBtn = h('button.primary', { type: 'submit' }, t('create'));
  const created = h('p', { role: 'status' });
  const form = h('form.panel#new-room', { novalidate: true, 'aria-labelledby': 'new-h' },
    h('h2#new-h', t('new_room')), h('div.grid', roomFields()), formErr(), createBtn, created);
  persist(form, 'new-room');
  const createAction = new Action();
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    created.textContent = '';
    if (missing(form)) return;
    createBtn.disabled = true;
    try {
      const { data } = await createAction.send('POST', '/rooms', roomBody(values(form)));
      forget('new-room');
      form.reset();
      created.textContent = t('created', { name: data.name });
      list.prepend(card(data));
      status.textContent = '';
    } catch (e) {
      showProblem(form, e);
    } finally {
      createBtn.disabled = false;
    }
  });

  function card(r) {
    const body = h('div');
    const li = h('li.card', { 'data-id': r.id }, body);
    function show() {
      const editBtn = h('button', { type: 'button', 'aria-label': `${t('edit')}: ${r.name}` }, t('edit'));
      const delBtn = h('button.danger', { type: 'button', 'aria-label': `${t('del')}: ${r.name}` }, t('del'));
      body.replaceChildren(
        h('h3', h('a', { href: `#/room/${encodeURIComponent(r.id)}` }, r.name)),
        h('p', r.city, ' · ', priceText(r.pricePerNight), ' · ', t('up_to', { n: r.capacity })),
        h('p.muted', ratingText(r)),
        h('div.row', editBtn, delBtn));
      editBtn.addEventListener('click', edit);
      delBtn.addEventListener('click', del);
    }
    function edit() {
      const save = h('button.primary', { type: 'submit' }, t('save'));
      const f = h('form', { novalidate: true, 'aria-label': `${t('edit')}: ${r.name}` },
        h('div.grid', roomFields(r, false)), formErr(),
        h('div.row', save, h('button', { type: 'button', onclick: () => { show(); body.querySelector('button').focus(); } }, t('cancel'))));
      const key = 'edit:' + r.id;
      persist(f, key);
      const action = new Action();
      f.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        clearErrors(f);
        if (missing(f)) return;
        save.disabled = true;
        try {
          const { data } = await action.send('PATCH', '/rooms/' + encodeURIComponent(r.id), roomBody(values(f), false));
          forget(key);
          r = data;
          show();
          body.querySelector('button').focus();
          announce(t('saved'));
        } catch (e) {
          showProblem(f, e);
        } finally {
          save.disabled = false;
        }
      });
      body.replaceChildren(f);
      f.querySelector('input').focus();
    }
    const delAction = new Action();
    async function del() {
      if (!await confirmDialog(t('del_title', { name: r.name }), t('del_warn'), t('del_yes'), t('cancel'))) return;
      try {
        await delAction.send('DELETE', '/rooms/' + encodeURIComponent(r.id));
        const nextFocus = li.nextElementSibling || li.previousElementSibling;
        li.remove();
        announce(t('deleted'));
        status.textContent = t('deleted');
        (nextFocus ? nextFocus.querySelector('a') : root.querySelector('h1')).focus();
      } catch (e) {
        body.append(h('p.err', { role: 'alert' }, e.status ? (e.problem.detail || e.message) : t('retry_net')));
      }
    }
    show();
    return li;
  }

  const { status, more } = pager('/rooms', { hostId: ctx.user.id }, (r) => list.append(card(r)), () => list.children.length);
  root.append(form, h('h2', t('rooms_title')), status, list, more);
  return root;
}

export function hostResvView(ctx) {
  const root = h('section', heading(t('resv_title')));
  if (needHost(ctx, root)) return root;
  const { table, body } = stackTable(t('resv_title'), [t('room'), t('guest'), t('dates'), t('guests'), t('amount'), t('status'), t('payment')]);
  const { status, more } = pager('/reservations', {}, (r) => body.append(h('tr', h('th', { scope: 'row' }, roomLink(r.roomId)),
    h('td', r.guestId), h('td', `${r.checkIn} → ${r.checkOut}`), h('td', r.guests), h('td', money(r.amount || 0)),
    h('td', badge(r.status)), payCell(r.id).td)), () => body.children.length);
  root.append(status, table, more);
  return root;
}
