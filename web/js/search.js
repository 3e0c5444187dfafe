// Guests: the availability search (GET /rooms, paged with `next` cursors).
import { h, field, formErr, values, clearErrors } from './dom.js';
import { t } from './i18n.js';
import { get, qs } from './api.js';
import { heading, showProblem, ratingText, priceText } from './ui.js';

const KEYS = ['city', 'checkIn', 'checkOut', 'guests', 'minPrice', 'maxPrice'];

export function roomCard(r, extra) {
  const q = extra ? qs(extra) : '';
  return h('li.card',
    h('h3', h('a', { href: `#/room/${encodeURIComponent(r.id)}${q}` }, r.name)),
    h('p', r.city, ' · ', priceText(r.pricePerNight), ' · ', t('up_to', { n: r.capacity })),
    h('p.muted', ratingText(r)));
}

export function searchView(ctx) {
  const p = ctx.params;
  const form = h('form.search', { role: 'search' },
    h('div.grid',
      field(t('city'), 'city', { value: p.get('city') || '', autocomplete: 'address-level2' }),
      field(t('check_in'), 'checkIn', { type: 'date', value: p.get('checkIn') || '' }),
      field(t('check_out'), 'checkOut', { type: 'date', value: p.get('checkOut') || '' }),
      field(t('guests'), 'guests', { type: 'number', min: 1, max: 50, inputmode: 'numeric', value: p.get('guests') || '' }),
      field(t('min_price'), 'minPrice', { type: 'number', min: 0, inputmode: 'numeric', value: p.get('minPrice') || '' }),
      field(t('max_price'), 'maxPrice', { type: 'number', min: 0, inputmode: 'numeric', value: p.get('maxPrice') || '' })),
    formErr(),
    h('button.primary', { type: 'submit' }, t('search')));
  const list = h('ul.cards', { 'aria-labelledby': 'results-h' });
  const status = h('p.muted', { role: 'status' });
  const more = h('button', { type: 'button', hidden: true }, t('more'));
  const results = h('section', h('h2#results-h', t('results')), status, list, more);

  let next = null;
  const query = {};
  for (const k of KEYS) if (p.get(k)) query[k] = p.get(k);

  async function load(cursor) {
    more.disabled = true;
    try {
      let page = await get('/rooms' + qs({ ...query, limit: 10, cursor }));
      // a filtered page may be empty and still have a next one
      for (let i = 0; i < 5 && !page.items.length && page.next; i++)
        page = await get('/rooms' + qs({ ...query, limit: 10, cursor: page.next }));
      const keep = {};
      for (const k of ['checkIn', 'checkOut', 'guests']) if (query[k]) keep[k] = query[k];
      const first = list.children.length;
      for (const r of page.items) list.append(roomCard(r, keep));
      next = page.next;
      more.hidden = !next;
      const n = list.children.length;
      status.textContent = n ? t('n_results', { n }) : (next ? '' : t('no_results'));
      if (cursor && list.children[first]) list.children[first].querySelector('a').focus();
    } catch (e) {
      showProblem(form, e);
    } finally {
      more.disabled = false;
    }
  }
  more.addEventListener('click', () => load(next));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const v = values(form);
    const q = {};
    for (const k of KEYS) if (v[k]) q[k] = v[k];
    ctx.go('#/search' + qs(q));
  });
  load(null);
  return h('section', heading(t('search_title')), form, results);
}
