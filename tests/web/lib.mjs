// Shared by the browser tests: Playwright on Debian's Chromium (skip 77
// when it or the npm packages are missing), steps that say what they checked,
// numbered screenshots under $BNB_WEB_ARTIFACTS/<test>/, axe-core.
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
export const chromiumPath = process.env.BNB_CHROMIUM || '/usr/bin/chromium';

// A missing prerequisite skips (77), or fails with BNB_WEB_REQUIRED=1
// (scripts/test: it installed everything, so something is broken).
function missing(what) {
  if (process.env.BNB_WEB_REQUIRED === '1') {
    console.log(`FAIL: ${what} (BNB_WEB_REQUIRED=1: scripts/test installs it, so the set-up is broken)`);
    console.log('0 passed, 1 failed');
    process.exit(1);
  }
  console.log('SKIP: ' + what);
  process.exit(77);
}

export function browserKit(name) {
  let pw;
  // playwright-core exits at once on an older Node (tests/web/run picks 20+)
  if (Number(process.versions.node.split('.')[0]) < 20) missing(`Node.js ${process.versions.node} is too old for playwright-core (20+; run through tests/web/run)`);
  try { pw = require('playwright-core'); } catch {
    missing('playwright-core is not installed (scripts/web-deps runs npm ci in tests/web)');
  }
  if (!existsSync(chromiumPath)) {
    missing(`no Chromium at ${chromiumPath} (scripts/install-deps installs Debian's chromium)`);
  }
  const axePath = require.resolve('axe-core/axe.min.js');
  const out = join(process.env.BNB_WEB_ARTIFACTS || join(import.meta.dirname || '.', 'artifacts'), name);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const t0 = Date.now();
  let step = 0;
  const say = (m) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}`);
  function check(cond, what) {
    if (!cond) { say('FAIL ' + what); throw new Error(what); }
    say('ok ' + what);
  }
  async function shot(page, label) {
    step++;
    await page.screenshot({ path: join(out, `${String(step).padStart(2, '0')}-${label}.png`), fullPage: true });
  }
  // axe-core on the page as it is: serious and critical violations fail.
  async function axe(page, label) {
    const a0 = Date.now();
    if (!(await page.evaluate(() => !!window.axe))) await page.addScriptTag({ path: axePath });
    const res = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
    const bad = res.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    for (const v of bad) say(`axe ${label}: ${v.impact} ${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`);
    check(bad.length === 0, `${label}: no serious or critical accessibility violation (axe-core, ${res.violations.length} minor, ${Date.now() - a0} ms)`);
  }
  const launch = () => pw.chromium.launch({ executablePath: chromiumPath, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  return { out, say, check, shot, axe, launch };
}
