// A room: details, rating, reviews (paged), the booking form and the review form.
import { h, field, formErr, values, clearErrors, showError, announce } from './dom.js';
import { t, money } from './i18n.js';
import { get, qs, Action } from './api.js';
import { heading, showProblem, ratingText, priceText, persist, forget, badge, nights } from './ui.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Wait until reservation `id` leaves `from` (PENDING, CANCEL_REQUESTED): the
// saga finishes by itself; `alive()` stops the wait when the page is left.
export async function waitState(id, from, alive, onChange) {
  for (let i = 0; i < 240 && alive(); i++) {
    await sleep(i < 10 ? 500 : 1000);
    try {
      const r = await get('/reservations/' + encodeURIComponent(id));
      if (r.status !== from) { onChange(r); return r; }
    } catch { /* keep waiting */ }
  }
  return null;
}

export function roomView(ctx) {
  const id = ctx.arg;
  const p = ctx.params;
  let alive = true;
  ctx.onCleanup(() => { alive = false; });
  const title = heading(t('loading'));
  const info = h('div');
  const root = h('section', title, info);

  async function loadRoom() {
    const r = await get('/rooms/' + encodeURIComponent(id));
    title.textContent = r.name;
    document.title = r.name + ' · BearBnB';
    info.replaceChildren(
      h('p', r.city, ' · ', priceText(r.pricePerNight), ' · ', t('up_to', { n: r.capacity })),
      h('p.rating', { id: 'room-rating' }, ratingText(r)),
      r.description ? h('p.desc', r.description) : '',
      h('p.muted', t('room_by', { host: r.hostId })));
    return r;
  }

  loadRoom().then((room) => {
    root.append(bookSection(room), reviewsSection(room));
  }).catch((e) => {
    title.textContent = e.status === 404 ? t('room_gone') : t('err_generic', { status: e.status, detail: e.message });
  });

  function bookSection(room) {
    const sec = h('section.panel', { 'aria-labelledby': 'book-h' }, h('h2#book-h', t('book_title')));
    if (!ctx.user || ctx.user.role !== 'guest') {
      sec.append(h('p', h('a', { href: '#/signin?back=' + encodeURIComponent(location.hash) }, t('need_guest'))));
      return sec;
    }
    const result = h('div.result', { role: 'status', 'aria-live': 'polite', tabindex: -1 });
    const btn = h('button.primary', { type: 'submit' }, t('book'));
    const form = h('form', { novalidate: true },
      h('div.grid',
        field(t('check_in'), 'checkIn', { type: 'date', required: true, value: p.get('checkIn') || '' }),
        field(t('check_out'), 'checkOut', { type: 'date', required: true, value: p.get('checkOut') || '' }),
        field(t('guests'), 'guests', { type: 'number', min: 1, max: room.capacity, required: true, inputmode: 'numeric', value: p.get('guests') || '1' }),
        field(t('card'), 'card', { required: true, inputmode: 'numeric', autocomplete: 'cc-number', maxlength: 23 }, t('card_hint'))),
      formErr(), btn);
    const draftKey = 'book:' + id;
    persist(form, draftKey);
    const action = new Action();
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      result.replaceChildren();
      const v = values(form);
      for (const k of ['checkIn', 'checkOut', 'guests', 'card']) if (!v[k]) { showError(form, k, t('required', { field: form.querySelector(`[data-field=${k}] label`).textContent })); return; }
      const body = { roomId: id, checkIn: v.checkIn, checkOut: v.checkOut, guests: Number(v.guests), card: v.card.replace(/[\s-]/g, '') };
      btn.disabled = true;
      btn.textContent = t('booking');
      try {
        const { status, data } = await action.send('POST', '/reservations', body);
        const n = nights(body.checkIn, body.checkOut);
        if (status === 201 && data.status === 'CONFIRMED') {
          showBooked(data, n);
          forget(draftKey);
          form.querySelector('[name=card]').value = '';
        } else {
          result.replaceChildren(h('p', badge(data.status || 'PENDING'), ' ', t('booked_pending')));
          result.focus();
          if (data.id) waitState(data.id, 'PENDING', () => alive, (r) => {
            if (r.status === 'CONFIRMED') showBooked(r, n);
            else result.replaceChildren(h('p', badge(r.status), ' ', t('booked_rejected')));
          });
        }
      } catch (e) {
        if (e.status === 402) {
          showError(form, 'card', t('declined'));
        } else if (e.status === 409) {
          showError(form, 'checkIn', t('taken', { detail: e.problem.detail || '' }));
        } else {
          showProblem(form, e);
        }
      } finally {
        btn.disabled = false;
        btn.textContent = t('book');
      }
    });
    function showBooked(r, n) {
      result.replaceChildren(h('p', badge(r.status), ' ',
        t('booked_ok', { nights: n, amount: money(r.amount), id: r.id })), h('p', h('a', { href: '#/trips' }, t('see_trips'))));
      result.focus();
      announce(t('st_CONFIRMED'));
    }
    sec.append(form, result);
    return sec;
  }

  function reviewsSection() {
    const list = h('ul.reviews');
    const more = h('button', { type: 'button', hidden: true }, t('more'));
    const sec = h('section', { 'aria-labelledby': 'rev-h' }, h('h2#rev-h', t('reviews')), list, more);
    let next = null;
    async function load(cursor, reset) {
      const page = await get(`/rooms/${encodeURIComponent(id)}/reviews` + qs({ limit: 10, cursor }));
      if (reset) list.replaceChildren();
      for (const r of page.items)
        list.append(h('li', h('p.stars', t('review_by', { author: r.authorId, stars: r.rating })), h('p', r.content)));
      if (!list.children.length) list.append(h('li.muted', t('no_rating')));
      next = page.next;
      more.hidden = !next;
    }
    more.addEventListener('click', () => load(next).catch(() => {}));
    load(null).catch(() => {});
    if (ctx.user && ctx.user.role === 'guest') sec.append(reviewForm(() => load(null, true)));
    return sec;
  }

  function reviewForm(reload) {
    const btn = h('button.primary', { type: 'submit' }, t('post_review'));
    const done = h('p', { role: 'status' });
    const form = h('form#review', { novalidate: true, 'aria-labelledby': 'review-h' },
      h('h3#review-h', { tabindex: -1 }, t('review_title')),
      field(t('stars'), 'rating', { options: [5, 4, 3, 2, 1].map((n) => [String(n), t('star_n', { n })]) }),
      field(t('review_text'), 'content', { multiline: true, required: true, maxlength: 2000 }),
      formErr(), btn, done);
    const draftKey = 'review:' + id;
    persist(form, draftKey);
    const action = new Action();
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      const v = values(form);
      btn.disabled = true;
      try {
        await action.send('POST', `/rooms/${encodeURIComponent(id)}/reviews`, { rating: Number(v.rating), content: v.content });
        forget(draftKey);
        form.querySelector('[name=content]').value = '';
        done.textContent = t('reviewed');
        await loadRoom();
        await reload();
      } catch (e) {
        showProblem(form, e);
      } finally {
        btn.disabled = false;
      }
    });
    if (p.get('review')) setTimeout(() => form.querySelector('h3').focus(), 0);
    return form;
  }

  return root;
}
