// The app's strings (web/js/i18n.js): every English key has a Korean text,
// both with the same {placeholders}, the Korean one in Hangul; every key the
// modules ask for with t('key') exists, and so does the badge of every
// reservation and payment state (t('st_' + status), t('pay_' + status);
// docs: DESIGN §5). No browser: the module is imported into Node with the
// three browser globals it touches stubbed. Exit 0 passed, 1 failed.
import { readFileSync, readdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const js = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'web', 'js');
globalThis.localStorage = { getItem: () => null, setItem: () => {} };
if (!globalThis.navigator) globalThis.navigator = { language: 'en-US' };
globalThis.document = { documentElement: {} };
const { S } = await import(pathToFileURL(join(js, 'i18n.js')).href);

const bad = [];
const holes = (s) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort().join(',');
const keys = Object.keys(S);
for (const k of keys) {
  const e = S[k];
  if (!Array.isArray(e) || e.length !== 2 || typeof e[0] !== 'string' || typeof e[1] !== 'string' || !e[0].trim() || !e[1].trim()) {
    bad.push(`${k}: not [English, Korean]: ${JSON.stringify(e)}`);
    continue;
  }
  if (holes(e[0]) !== holes(e[1])) bad.push(`${k}: placeholders differ: "${e[0]}" / "${e[1]}"`);
  // Korean text, except a key whose Korean side names the other language,
  // or one with no words at all ("{n}/5")
  const words = e[1].replace(/\{\w+\}/g, '');
  if (!/[\uac00-\ud7a3]/.test(words) && /[A-Za-z]/.test(words) && k !== 'lang') bad.push(`${k}: the Korean text has no Hangul: "${e[1]}"`);
}
const used = new Set();
for (const f of readdirSync(js).filter((n) => n.endsWith('.js'))) {
  for (const m of readFileSync(join(js, f), 'utf8').matchAll(/\bt\('([A-Za-z0-9_]+)'(\s*\+)?/g)) {
    if (m[2]) { // t('st_' + status): a family of keys
      const fam = keys.filter((k) => k.startsWith(m[1]));
      fam.forEach((k) => used.add(k));
      if (!fam.length) bad.push(`${f}: t('${m[1]}' + ...) has no string starting so`);
      continue;
    }
    used.add(m[1]);
    if (!(m[1] in S)) bad.push(`${f}: t('${m[1]}') has no string`);
  }
}
for (const st of ['PENDING', 'CONFIRMED', 'REJECTED', 'CANCEL_REQUESTED', 'CANCELLED'])
  if (!S['st_' + st]) bad.push(`no badge st_${st}`);
for (const st of ['APPROVED', 'DECLINED', 'CANCELLED'])
  if (!S['pay_' + st]) bad.push(`no badge pay_${st}`);
const unused = keys.filter((k) => !used.has(k)); // said, not failed: a key may be chosen at run time
for (const b of bad) console.log('FAIL ' + b);
console.log(`${keys.length} keys, ${used.size} asked for by the modules` + (unused.length ? `; never asked for: ${unused.join(', ')}` : ''));
console.log(`${bad.length ? 0 : 1} passed, ${bad.length ? 1 : 0} failed`);
process.exit(bad.length ? 1 : 0);
