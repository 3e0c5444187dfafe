// The web app (web/) clicked through in Debian's headless Chromium against a
// real all-in-one bearbnb (issue 14): a host lists a room; a guest finds it
// by city and dates, books it and sees CONFIRMED; the dashboard updates
// without a reload; a declined card shows its message and the dates stay
// bookable; the guest cancels and sees CANCELLED and the refund; a review
// moves the rating; a second guest cannot see the first one's trips; the
// host deletes the room after a warning. axe-core checks every page (no
// serious or critical violation); a screenshot of each step is saved under
// $BNB_WEB_ARTIFACTS/app/ (meson: build-test/meson-logs/web/app/).
// Exit 0 passed, 1 failed, 77 skipped (no Chromium / npm packages).
import { join } from 'node:path';
import { browserKit } from './lib.mjs';
import { startHost } from './host.mjs';

const { out, say, check, shot, axe, launch } = browserKit('app');

const day = (n) => new Date(Date.now() + n * 86400000).toISOString().slice(0, 10);
const IN = day(30), OUT = day(33), IN2 = day(40), OUT2 = day(42), IN3 = day(50), OUT3 = day(51);
const GOOD = '4111111111111111', DECLINED = '4000000000000002';

let host, browser;
async function main() {
  // admin: pause the payment plugin for the PENDING step; a short call
  // timeout so the booking answers 202 after 1 s
  const hostEnv = { BEARBNB_ADMIN: '1', BEARBNB_CALL_TIMEOUT_MS: '1000' };
  host = await startHost(hostEnv);
  const admin = async (path) => {
    const r = await fetch(host.url + path, { method: 'POST' });
    check(r.status === 200, `POST ${path}`);
  };
  const base = host.url;
  // the sign-in the app relies on: dev mode on the embedded default ...
  const cfg = await (await fetch(base + '/auth/config')).json();
  check(cfg.mode === 'dev', `GET /auth/config on the embedded default: ${JSON.stringify(cfg)}`);
  const bad = await fetch(base + '/dev/token', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"sub":"x","role":"admin"}' });
  check(bad.status === 400 && /\brole\b/.test((await bad.json()).detail), 'POST /dev/token with another role: 400 naming role');
  // ... and none with a configured key: no development sign-in at all
  const other = await startHost({ BEARBNB_AUTH_KEY_FILE: join(host.dir, 'jwt.key') });
  try {
    const oc = await (await fetch(other.url + '/auth/config')).json();
    const ot = await fetch(other.url + '/dev/token', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"sub":"x","role":"host"}' });
    check(oc.mode === 'none' && ot.status === 404, `with auth.key_file set: /auth/config ${JSON.stringify(oc)}, POST /dev/token ${ot.status}`);
  } finally {
    const code = await other.stop();
    other.cleanup();
    check(code === 0, `the second host exits 0 (${code})`);
  }
  say(`host ${host.url}`);

  browser = await launch();
  const desktop = { viewport: { width: 1200, height: 860 } };
  const phone = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true };
  const errors = [];
  const changes = []; // every state-changing API request: [method path, Idempotency-Key]
  async function newPage(opts) {
    const ctx = await browser.newContext({ ...opts, locale: 'en-US' });
    const page = await ctx.newPage();
    page.setDefaultTimeout(15000);
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('request', (rq) => {
      const u = new URL(rq.url());
      if (rq.method() !== 'GET' && rq.method() !== 'HEAD' && u.pathname !== '/dev/token')
        changes.push([`${rq.method()} ${u.pathname}`, rq.headers()['idempotency-key']]);
    });
    return page;
  }
  // At phone width nothing is wider than the screen.
  async function fits(page, what) {
    const [sw, w] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    check(sw <= w, `${what} fits the phone's width (${sw} <= ${w} px)`);
  }
  async function signIn(page, name, role) {
    await page.goto(base + '/#/signin');
    await page.getByText('Development sign-in').waitFor();
    await page.getByLabel('Name', { exact: true }).fill(name);
    await page.getByLabel(role === 'host' ? /Host: / : /Guest: /).check();
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText(`${name} (${role})`).waitFor();
  }

  // 1. the host signs in (development sign-in, says so) and lists a room
  say('browser up');
  const hp = await newPage(desktop);
  const loaded = [];
  const onResp = (resp) => {
    const type = resp.headers()['content-type'] || '';
    if (!/html|javascript|css/.test(type)) return;
    const u = new URL(resp.url());
    loaded.push(Promise.all([resp.body().then((b) => b.length).catch(() => 0),
      resp.request().sizes().then((z) => z.responseBodySize).catch(() => 0)])
      .then(([plain, wire]) => ({ path: u.pathname, type, plain, wire, cc: resp.headers()['cache-control'] || '', enc: resp.headers()['content-encoding'] || '' })));
  };
  hp.on('response', onResp);
  await hp.goto(base + '/#/signin');
  await hp.getByText('Development sign-in').waitFor();
  hp.off('response', onResp);
  const files = await Promise.all(loaded);
  const weight = files.reduce((a, f) => a + f.plain, 0), wire = files.reduce((a, f) => a + f.wire, 0);
  check(weight < 100 * 1024, `first load: ${files.length} files, ${(weight / 1024).toFixed(1)} KB uncompressed, ${(wire / 1024).toFixed(1)} KB over the wire (gzip: ${files.filter((f) => f.enc === 'gzip').length} of them) (budget 100 KB; web/README.md)`);
  // long cache for hashed assets: every script and style under its content
  // hash, immutable; index.html revalidated
  const assets = files.filter((f) => !/html/.test(f.type));
  check(assets.length >= 10 && assets.every((f) => /\.[0-9a-f]{12}\.(js|css)$/.test(f.path) && f.cc === 'public, max-age=31536000, immutable' && f.enc === 'gzip') &&
        files.filter((f) => /html/.test(f.type)).every((f) => f.cc === 'no-cache'),
  `the ${assets.length} scripts and styles load under hashed names, immutable and gzip; index.html no-cache` +
    ` (${files.map((f) => `${f.path} ${f.cc}`).filter((x) => !/immutable|no-cache/.test(x) || !/[0-9a-f]{12}\.|^\/ /.test(x)).join('; ')})`);
  await axe(hp, 'sign-in');
  await shot(hp, 'dev-sign-in');
  await signIn(hp, 'alice', 'host');
  await hp.getByRole('link', { name: 'My rooms' }).click();
  const nf = hp.locator('#new-room');
  await nf.getByLabel('Name', { exact: true }).fill('Fjord cabin');
  await nf.getByLabel('City', { exact: true }).fill('Bergen');
  await nf.getByLabel('Price per night', { exact: true }).fill('0');
  await nf.getByLabel('Capacity (guests)', { exact: true }).fill('2');
  await nf.getByLabel('Description', { exact: true }).fill('Grass roof, sea view');
  await nf.getByRole('button', { name: 'List room' }).click();
  const priceErr = nf.locator('[data-field=pricePerNight] .err');
  await priceErr.waitFor();
  check(await nf.getByLabel('Price per night', { exact: true }).getAttribute('aria-invalid') === 'true' &&
        await nf.getByLabel('Name', { exact: true }).inputValue() === 'Fjord cabin',
        'a refused price (problem+json) shows next to the price field and keeps what was typed: ' + await priceErr.textContent());
  await shot(hp, 'host-room-error-next-to-field');
  await nf.getByLabel('Price per night', { exact: true }).fill('120');
  await nf.getByRole('button', { name: 'List room' }).click();
  await hp.getByText('Room “Fjord cabin” is listed.').waitFor();
  const roomId = await hp.locator('#my-rooms li.card').first().getAttribute('data-id');
  check(!!roomId, `the host sees the new room in My rooms (${roomId})`);
  await axe(hp, 'my rooms');
  await shot(hp, 'host-room-listed');

  // 2. the dashboard, opened once and never reloaded
  const dp = await newPage(desktop);
  await dp.goto(base + '/#/dashboard');
  const drow = dp.locator(`#dash tr[data-id="${roomId}"]`);
  await drow.waitFor();
  await dp.evaluate(() => { window.__noReload = 1; });
  // with the host's stream (GET /dashboard/stream answers text/event-stream)
  // the page must be on it; without it, it says it polls
  const ac = new AbortController();
  const sr = await fetch(host.url + '/dashboard/stream', { signal: ac.signal }).catch(() => null);
  const streams = !!sr && sr.status === 200 && (sr.headers.get('content-type') || '').startsWith('text/event-stream');
  ac.abort();
  if (streams) await dp.locator('.live[data-state=live]').waitFor();
  else await dp.locator('.live[data-state=polling]').waitFor();
  check(true, streams ? 'the dashboard is live on /dashboard/stream (EventSource)' : 'no /dashboard/stream on this host yet: the dashboard says it polls');
  await axe(dp, 'dashboard');
  await shot(dp, 'dashboard-before');

  // ... and the host's own dashboard, signed in: the stream carries alice's
  // token, so the open Reservations row of her room changes live. What each
  // page's EventSource received is read from Chromium (CDP), not from the app.
  const streamOf = async (page) => {
    const got = { events: [], urls: [] };
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Network.enable');
    cdp.on('Network.eventSourceMessageReceived', (e) => got.events.push(e));
    page.on('response', (r) => {
      const u = new URL(r.url());
      if (u.pathname === '/dashboard/stream') got.urls.push(r.request().allHeaders().then((hs) => [u, hs['last-event-id'], r.status()]));
    });
    return got;
  };
  const dpSeen = await streamOf(dp);
  await dp.reload(); // now with the recorder on
  await drow.waitFor();
  await dp.locator('.live[data-state=live]').waitFor();
  await dp.evaluate(() => { window.__noReload = 1; });
  const hdash = await newPage(desktop);
  const hdSeen = await streamOf(hdash);
  await signIn(hdash, 'alice', 'host');
  await hdash.goto(base + '/#/dashboard');
  await hdash.locator('.live[data-state=live]').waitFor();
  await hdash.locator(`#dash tr[data-id="${roomId}"]`).getByRole('button', { name: /^Reservations: / }).click();
  const hdDetail = hdash.locator(`#dash tr.detail[data-room="${roomId}"]`);
  await hdDetail.getByText('Nothing here yet.').waitFor();
  await hdash.evaluate(() => { window.__noReload = 1; });
  const opened = async (seen) => Promise.all(seen.urls);
  check((await opened(hdSeen)).length > 0 && (await opened(hdSeen)).every(([u]) => u.searchParams.get('access_token')) &&
        (await opened(dpSeen)).length > 0 && (await opened(dpSeen)).every(([u]) => !u.searchParams.has('access_token')),
  "the signed-in host's dashboard stream carries her token (?access_token=), the anonymous one none");

  // 3. a guest at phone width finds it by city and dates
  const gp = await newPage(phone);
  await signIn(gp, 'bob', 'guest');
  await gp.goto(base + '/#/');
  await gp.reload();
  await gp.getByLabel('City', { exact: true }).waitFor();
  await gp.keyboard.press('Tab');
  check(await gp.evaluate(() => document.activeElement.id) === 'skip', 'the first Tab reaches the skip link');
  await gp.keyboard.press('Enter');
  check(await gp.evaluate(() => document.activeElement.id) === 'main', 'the skip link moves focus to the content');
  await gp.getByLabel('City', { exact: true }).fill('Bergen');
  await gp.getByLabel('Check-in', { exact: true }).fill(IN);
  await gp.getByLabel('Check-out', { exact: true }).fill(OUT);
  await gp.getByLabel('Guests', { exact: true }).fill('2');
  await gp.getByRole('button', { name: 'Search' }).click();
  const hit = gp.getByRole('link', { name: 'Fjord cabin' });
  await hit.waitFor();
  check(true, `the guest finds the room by city Bergen and ${IN}..${OUT}`);
  await axe(gp, 'search');
  await fits(gp, 'the search page');
  await shot(gp, 'guest-search');
  // paging: 12 rooms in Tromsø (listed through the API), 10 a page
  const alice = host.token('alice', 'host');
  for (let i = 1; i <= 12; i++) {
    const r = await fetch(host.url + '/rooms', {
      method: 'POST',
      headers: { Authorization: 'Bearer ' + alice, 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: `Tromsø flat ${i}`, description: '', city: 'Tromsø', pricePerNight: 80 + i, capacity: 2 }),
    });
    if (r.status !== 201) check(false, `POST /rooms ${r.status}`);
  }
  await gp.getByLabel('City', { exact: true }).fill('Tromsø');
  await gp.getByRole('button', { name: 'Search' }).click();
  const cards = gp.locator('ul.cards li');
  await gp.getByRole('button', { name: 'Show more' }).waitFor();
  check(await cards.count() === 10, 'the search shows 10 rooms a page');
  await gp.getByRole('button', { name: 'Show more' }).click();
  await cards.nth(11).waitFor();
  check(await cards.count() === 12 && await gp.getByRole('button', { name: 'Show more' }).isHidden() &&
        await gp.evaluate(() => document.activeElement.textContent.startsWith('Tromsø flat')),
  'Show more (the next cursor) adds the last 2, moves focus to the first new one and hides itself');
  await gp.goBack();
  await hit.waitFor();
  await gp.getByLabel('Highest price per night', { exact: true }).fill('100');
  await gp.getByRole('button', { name: 'Search' }).click();
  await gp.locator('#main').getByText('No room matches').waitFor();
  check(true, 'a highest price under the room\'s (100 < 120) finds nothing');
  await gp.goBack();
  await hit.waitFor();

  // 4. books it and sees CONFIRMED
  await hit.click();
  await gp.getByRole('heading', { name: 'Fjord cabin' }).waitFor();
  check(await gp.getByLabel('Check-in', { exact: true }).inputValue() === IN, 'the room page keeps the searched dates');
  await gp.getByLabel('Card number', { exact: true }).fill(GOOD);
  // the first attempt dies on the network: the app sends it again with the same Idempotency-Key
  const keys = [];
  await gp.route((u) => u.pathname === '/reservations', async (route) => {
    if (route.request().method() !== 'POST') return route.continue();
    keys.push(route.request().headers()['idempotency-key']);
    return keys.length === 1 ? route.abort('connectionreset') : route.continue();
  });
  await gp.getByRole('button', { name: 'Book and pay' }).click();
  const result = gp.locator('.result');
  await result.getByText('Booking confirmed').waitFor();
  await gp.unroute((u) => u.pathname === '/reservations');
  check(keys.length === 2 && /^[0-9a-f-]{36}$/.test(keys[0]) && keys[0] === keys[1],
    `a booking retried after a network failure carries the same Idempotency-Key (${keys.join(', ')})`);
  check(await result.locator('.badge').textContent() === 'Confirmed', 'the guest sees CONFIRMED: ' + await result.textContent());
  await axe(gp, 'room');
  await fits(gp, 'the room page');
  await shot(gp, 'guest-booked-confirmed');

  // 5. the dashboard updated without a reload
  await dp.locator(`#dash tr[data-id="${roomId}"] td[data-k=bookingCnt]`).filter({ hasText: /^1$/ }).waitFor({ timeout: 20000 });
  check(await dp.evaluate(() => window.__noReload === 1), 'the dashboard shows the booking without a reload');
  await shot(dp, 'dashboard-after-booking');
  // the host's open Reservations row: bob's booking, live
  await hdDetail.locator('li', { hasText: 'bob' }).locator('.badge.st-CONFIRMED').waitFor({ timeout: 20000 });
  check(await hdash.evaluate(() => window.__noReload === 1), "the host's dashboard shows bob's booking (a private detail) live in her room's Reservations row, without a reload");
  await shot(hdash, 'host-dashboard-private-live');
  const privateIn = (seen) => seen.events.filter((e) => e.eventName === 'reservation' || /guestId|"bob"/.test(e.data));
  check(privateIn(hdSeen).length > 0 && privateIn(dpSeen).length === 0 &&
        !(await dp.locator('#dash').textContent()).includes('bob') && dpSeen.events.some((e) => e.eventName === 'room'),
  `the anonymous dashboard got room summaries only (${dpSeen.events.length} events, none private; the host's got ${privateIn(hdSeen).length} reservation events)`);

  // 6. a declined card: its message next to the card, nothing lost, the dates stay bookable
  await gp.getByLabel('Check-in', { exact: true }).fill(IN2);
  await gp.getByLabel('Check-out', { exact: true }).fill(OUT2);
  await gp.getByLabel('Card number', { exact: true }).fill(DECLINED);
  await gp.getByRole('button', { name: 'Book and pay' }).click();
  const cardErr = gp.locator('[data-field=card] .err');
  await cardErr.getByText('declined').waitFor();
  check(await gp.getByLabel('Card number', { exact: true }).inputValue() === DECLINED && await gp.getByLabel('Check-in', { exact: true }).inputValue() === IN2,
    'a declined card shows its message next to the card and keeps what was typed');
  check(await gp.evaluate(() => document.activeElement && document.activeElement.name) === 'card', 'focus moves to the card field');
  await shot(gp, 'guest-card-declined');
  await gp.getByLabel('Card number', { exact: true }).fill(GOOD);
  await gp.getByRole('button', { name: 'Book and pay' }).click();
  await result.getByText('Booking confirmed').waitFor();
  check(true, `after the decline the same dates ${IN2}..${OUT2} book with another card`);

  // 6b. payment slow (paused): PENDING, then CONFIRMED by itself when the saga ends
  await admin('/admin/plugins/payment/pause');
  await gp.getByLabel('Check-in', { exact: true }).fill(IN3);
  await gp.getByLabel('Check-out', { exact: true }).fill(OUT3);
  await gp.getByLabel('Card number', { exact: true }).fill(GOOD);
  await gp.getByRole('button', { name: 'Book and pay' }).click();
  await result.getByText('Booking pending').waitFor({ timeout: 20000 });
  check(await result.locator('.badge').textContent() === 'Pending', 'with payment paused the guest sees PENDING');
  await shot(gp, 'guest-booking-pending');
  await admin('/admin/plugins/payment/resume');
  await result.getByText('Booking confirmed').waitFor({ timeout: 30000 });
  check(true, 'the PENDING booking turns CONFIRMED by itself once payment answers');
  await shot(gp, 'guest-pending-confirmed');

  // 7. my trips: cancel the first booking, see CANCELLED and the refund
  await gp.goto(base + '/#/trips');
  const rows = gp.locator('tbody tr');
  await rows.nth(3).waitFor();
  check(await rows.count() === 4, 'My trips lists the three bookings and the declined one');
  await gp.getByText('Declined').first().waitFor();
  const first = gp.locator('tbody tr', { hasText: `${IN} → ${OUT}` });
  await first.getByText('Paid').waitFor();
  const firstId = await first.getAttribute('data-id');
  await axe(gp, 'my trips');
  await fits(gp, 'my trips');
  await first.getByRole('button', { name: /Cancel booking/ }).click();
  const dlg = gp.locator('dialog');
  await dlg.getByText('refunded').waitFor();
  await shot(gp, 'guest-cancel-confirm');
  await dlg.getByRole('button', { name: 'Cancel booking' }).click();
  await first.locator('.badge.st-CANCELLED').waitFor({ timeout: 20000 });
  await first.getByText('Refunded').waitFor({ timeout: 20000 });
  check(true, 'the guest sees CANCELLED and Refunded');
  await shot(gp, 'guest-cancelled-refunded');
  const hdFirst = hdDetail.locator(`li[data-id="${firstId}"]`);
  await hdFirst.locator('.badge.st-CANCELLED').waitFor({ timeout: 20000 });
  await hdFirst.getByText('Refunded').waitFor({ timeout: 20000 });
  check(await hdash.evaluate(() => window.__noReload === 1), "the host's dashboard shows the cancellation and the refund live");

  // 8. a review moves the room's rating (on the page and on the live dashboard)
  await gp.goto(`${base}/#/room/${roomId}`);
  await gp.locator('#room-rating').getByText('No reviews yet').waitFor();
  await gp.getByLabel('Rating', { exact: true }).selectOption('4');
  await gp.getByLabel('Your review', { exact: true }).fill('Quiet and warm.');
  await gp.getByRole('button', { name: 'Post review' }).click();
  await gp.locator('#room-rating').getByText('Rating 4.0 of 5 (1 review)').waitFor();
  await gp.getByText('Quiet and warm.').waitFor();
  check(true, 'the review moves the rating to 4.0 and is listed');
  await shot(gp, 'guest-reviewed');
  await dp.locator(`#dash tr[data-id="${roomId}"] td[data-k=rating]`).filter({ hasText: '4.0' }).waitFor({ timeout: 20000 });
  check(await dp.evaluate(() => window.__noReload === 1), 'the dashboard shows the new rating without a reload');
  await shot(dp, 'dashboard-after-review');

  // 9. a second guest cannot see the first one's trips
  const g2 = await newPage(phone);
  await signIn(g2, 'gina', 'guest');
  await g2.goto(base + '/#/trips');
  await g2.getByText('Nothing here yet.').waitFor();
  const peek = await g2.evaluate(async (id) => (await fetch('/reservations/' + id, { headers: { Authorization: 'Bearer ' + sessionStorage.getItem('bnb.token') } })).status, firstId);
  check(peek === 403 || peek === 404, `a second guest sees no trips and cannot open the first one's reservation (${peek})`);
  await shot(g2, 'second-guest-no-trips');

  // 10. the host: reservations of my rooms; Korean; delete with its warning
  await hp.getByRole('link', { name: 'Reservations' }).click();
  await hp.locator('tbody tr').nth(3).waitFor();
  check(await hp.locator('tbody tr', { hasText: 'bob' }).count() === 4, 'the host sees the four reservations of the room');
  await axe(hp, 'host reservations');
  await shot(hp, 'host-reservations');
  await hp.getByRole('button', { name: 'Switch language to Korean' }).click();
  await hp.getByRole('heading', { name: '내 숙소의 예약' }).waitFor();
  check(await hp.evaluate(() => document.documentElement.lang) === 'ko', 'the app switches to Korean (html lang=ko)');
  await axe(hp, 'host reservations (Korean)');
  await shot(hp, 'host-reservations-korean');
  await hp.getByRole('link', { name: '내 숙소' }).click();
  await hp.locator('#new-room').getByLabel('이름', { exact: true }).fill('Half-typed');
  await hp.getByRole('button', { name: '언어를 영어로 바꾸기' }).click();
  check(await hp.locator('#new-room').getByLabel('Name', { exact: true }).inputValue() === 'Half-typed',
    'switching the language keeps what was typed');
  const card = hp.locator(`#my-rooms li[data-id="${roomId}"]`);
  await card.getByRole('button', { name: 'Edit: Fjord cabin' }).click();
  await card.getByLabel('Price per night', { exact: true }).fill('130');
  await card.getByRole('button', { name: 'Save' }).click();
  await card.getByText('130 per night').waitFor();
  check(true, 'the host edits the price (120 -> 130)');
  await shot(hp, 'host-room-edited');
  await hp.getByRole('button', { name: 'Delete: Fjord cabin' }).click();
  const hd = hp.locator('dialog');
  await hd.getByText('cancels every future booking').waitFor();
  await axe(hp, 'delete warning');
  await shot(hp, 'host-delete-warning');
  await hd.getByRole('button', { name: /Delete room, cancel and refund/ }).click();
  await hp.locator(`#my-rooms li[data-id="${roomId}"]`).waitFor({ state: 'detached' });
  check(true, 'the host deletes the room after the warning');
  await gp.goto(base + '/#/trips');
  const second = gp.locator('tbody tr', { hasText: `${IN2} → ${OUT2}` }).filter({ has: gp.locator('.st-CONFIRMED, .st-CANCELLED, .st-CANCEL_REQUESTED') });
  await second.waitFor();
  for (let i = 0; i < 40 && !(await second.locator('.st-CANCELLED').count()); i++) {
    await gp.waitForTimeout(500);
    await gp.reload();
    await second.waitFor();
  }
  await second.getByText('Refunded').waitFor();
  check(true, "the deleted room's future booking is CANCELLED and refunded in the guest's trips");
  await shot(gp, 'guest-room-deleted-refunded');

  // 11. the host restarts (a rolling update) while both dashboards are open;
  // a booking is made while the pages cannot reach it: they resume with
  // Last-Event-ID and miss nothing, without a reload
  const flat = (await (await fetch(base + '/rooms?' + new URLSearchParams({ city: 'Tromsø', limit: 100 }))).json()).items.find((r) => r.name === 'Tromsø flat 1');
  const flatRow = (page) => page.locator(`#dash tr[data-id="${flat.id}"]`);
  await flatRow(hdash).getByRole('button', { name: /^Reservations: / }).click();
  const flatDetail = hdash.locator(`#dash tr.detail[data-room="${flat.id}"]`);
  await flatDetail.getByText('Nothing here yet.').waitFor();
  const before = [hdSeen.urls.length, dpSeen.urls.length];
  await hdash.context().setOffline(true);
  await dp.context().setOffline(true);
  const port = Number(new URL(base).port);
  const code = await host.stop();
  check(code === 0, `the host exits 0 on SIGTERM with the streams open (${code})`);
  host = await startHost(hostEnv, port, host.dir);
  const booked = await fetch(base + '/reservations', {
    method: 'POST',
    headers: { Authorization: 'Bearer ' + host.token('bob', 'guest'), 'Content-Type': 'application/json' },
    body: JSON.stringify({ roomId: flat.id, checkIn: IN, checkOut: OUT, guests: 1, card: GOOD }),
  });
  check(booked.status === 201, `restarted on port ${port}; bob books Tromsø flat 1 while the dashboards are offline (${booked.status})`);
  // its dashboard change is committed before the pages come back: only a resume delivers it
  for (let i = 0; ; i++) {
    const d = await (await fetch(`${base}/dashboard/rooms/${flat.id}`)).json();
    if (d.bookingCnt === 1) break;
    if (i > 100) check(false, `the dashboard read model counts the booking (${JSON.stringify(d)})`);
    await new Promise((r) => setTimeout(r, 100));
  }
  await hdash.context().setOffline(false);
  await dp.context().setOffline(false);
  await flatDetail.locator('li', { hasText: 'bob' }).locator('.badge.st-CONFIRMED').waitFor({ timeout: 30000 });
  await flatRow(dp).locator('td[data-k=bookingCnt]').filter({ hasText: /^1$/ }).waitFor({ timeout: 30000 });
  const resumed = async (seen, n) => (await opened(seen)).slice(n).filter(([u, lei, st]) => st === 200 && /^\d+$/.test(lei || u.searchParams.get('lastEventId') || ''));
  const [hr, dr] = [await resumed(hdSeen, before[0]), await resumed(dpSeen, before[1])];
  say(`resumed with: ${[...hr, ...dr].map(([u, lei]) => `${u.search.replace(/access_token=[^&]*/, 'access_token=…')} Last-Event-ID ${lei}`).join('; ')}`);
  check(hr.length > 0 && dr.length > 0 &&
        await hdash.evaluate(() => window.__noReload === 1) && await dp.evaluate(() => window.__noReload === 1),
  "both dashboards reconnected with Last-Event-ID and show the booking made while they were away (the host's with its private detail), without a reload");
  check(privateIn(dpSeen).length === 0, 'the anonymous dashboard still got nothing private after the resume');
  await shot(hdash, 'host-dashboard-resumed');

  const keyless = changes.filter(([, k]) => !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(k || ''));
  check(changes.length >= 8 && keyless.length === 0,
    `all ${changes.length} state-changing requests carry an Idempotency-Key UUID` + (keyless.length ? ': not ' + keyless.map((c) => c[0]).join(', ') : ''));
  const fresh = new Set(changes.map(([, k]) => k)).size;
  check(fresh === changes.length - 1, `one key per user action (${fresh} keys for ${changes.length} requests, one of them a retry)`);
  check(errors.length === 0, 'no script error in any page' + (errors.length ? ': ' + errors.join('; ') : ''));
}

let rc = 0;
try {
  await main();
} catch (e) {
  rc = 1;
  console.log('FAIL: ' + (e && e.stack || e));
}
if (browser) await browser.close().catch(() => {});
if (host) {
  const code = await host.stop();
  if (code !== 0) { rc = 1; console.log(`bearbnb exited ${code}\n` + host.tail()); }
  else if (rc) console.log('host log tail:\n' + host.tail());
  host.cleanup();
}
say(`screenshots in ${out}`);
console.log(`${rc ? 0 : 1} passed, ${rc ? 1 : 0} failed`);
process.exit(rc);
