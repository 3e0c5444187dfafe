// The BearBnB HTTP API (docs/api.md) from the browser: bearer token, JSON,
// problem+json errors as ApiError, and an Idempotency-Key on every request
// that changes state (one per user action, reused when that action is retried).
import { auth } from './auth.js';

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

export function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((v) => v.toString(16).padStart(2, '0')).join('');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Answers after which the same action may be sent again with the same key.
const retryable = (s) => s === 0 || s === 429 || s === 502 || s === 503 || s === 504;

// One user action that changes state: its key lives until the server gave a
// final answer, so a retry (automatic or the user pressing the button again
// after a network failure) carries the same Idempotency-Key.
export class Action {
  constructor() { this.key = null; this.body = null; }
  async send(method, path, body) {
    const sig = JSON.stringify([method, path, body]);
    if (!this.key || sig !== this.body) { this.key = uuid(); this.body = sig; }
    try {
      const r = await request(method, path, body, { 'Idempotency-Key': this.key }, 3);
      this.key = null;
      return r;
    } catch (e) {
      if (!(e instanceof ApiError) || !(retryable(e.status) || (e.status === 409 && /in use/i.test(e.problem.title || '')))) this.key = null;
      throw e;
    }
  }
}

export async function request(method, path, body, headers = {}, tries = 1) {
  const h = { Accept: 'application/json, application/problem+json', ...headers };
  await auth.fresh();
  const tok = auth.token();
  if (tok) h.Authorization = 'Bearer ' + tok;
  if (body !== undefined) h['Content-Type'] = 'application/json';
  for (let i = 0; ; i++) {
    let res;
    try {
      res = await fetch(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      if (i + 1 < tries) { await sleep(500 * (i + 1)); continue; }
      throw new ApiError(0, { title: 'network', detail: '' });
    }
    // 409 `Idempotency Key In Use` (Retry-After): the first request with this
    // key is still running; asking again later gets its answer.
    const inUse = res.status === 409 && h['Idempotency-Key'] && res.headers.get('Retry-After');
    if ((retryable(res.status) || inUse) && i + 1 < tries) {
      await sleep(Math.min(4000, 1000 * (Number(res.headers.get('Retry-After')) || i + 1)));
      continue;
    }
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    if (res.status === 401) auth.expired();
    if (!res.ok) throw new ApiError(res.status, data);
    return { status: res.status, data };
  }
}

export const get = (path) => request('GET', path, undefined, {}, 2).then((r) => r.data);

export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') u.set(k, v);
  const s = u.toString();
  return s ? '?' + s : '';
}
