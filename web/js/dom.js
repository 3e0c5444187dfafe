// Tiny DOM helpers: h('tag.class#id', {attrs, on*: handler}, ...children).
export function h(spec, attrs, ...kids) {
  const m = /^([a-z0-9]+)?((?:[.#][\w-]+)*)$/i.exec(spec);
  const el = document.createElement((m && m[1]) || 'div');
  if (m && m[2]) for (const part of m[2].match(/[.#][\w-]+/g)) {
    if (part[0] === '.') el.classList.add(part.slice(1)); else el.id = part.slice(1);
  }
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    kids.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else if (k in el && typeof v !== 'string' && k !== 'list') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  add(el, kids);
  return el;
}

function add(el, kids) {
  for (const k of kids) {
    if (k === null || k === undefined || k === false) continue;
    if (Array.isArray(k)) add(el, k);
    else el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
}

let uid = 0;
export const nextId = (p = 'f') => `${p}${++uid}`;

// A labelled form field: label, control, hint and an error slot the control
// points at (aria-describedby), so a problem+json detail lands next to it.
export function field(label, name, attrs = {}, hint) {
  const id = nextId(name);
  const err = h('p.err', { id: id + '-err', hidden: true });
  const ctl = attrs.options
    ? h('select', { id, name, ...without(attrs, 'options') },
        attrs.options.map(([v, l]) => h('option', { value: v }, l)))
    : attrs.multiline
      ? h('textarea', { id, name, rows: 3, ...without(attrs, 'multiline') })
      : h('input', { id, name, type: 'text', ...attrs });
  const desc = [err.id];
  let hintEl = null;
  if (hint) { hintEl = h('p.hint', { id: id + '-hint' }, hint); desc.unshift(hintEl.id); }
  ctl.setAttribute('aria-describedby', desc.join(' '));
  return h('div.field', { 'data-field': name }, h('label', { for: id }, label), ctl, hintEl, err);
}

function without(o, k) { const c = { ...o }; delete c[k]; return c; }

export function clearErrors(form) {
  for (const e of form.querySelectorAll('.err')) { e.hidden = true; e.textContent = ''; }
  for (const c of form.querySelectorAll('[aria-invalid]')) c.removeAttribute('aria-invalid');
}

// Show `msg` next to field `name` of `form` (or in its form-level slot) and
// move focus there; returns the element that took focus.
export function showError(form, name, msg) {
  const wrap = name && form.querySelector(`[data-field="${name}"]`);
  if (wrap) {
    const ctl = wrap.querySelector('input,select,textarea');
    const err = wrap.querySelector('.err');
    err.textContent = msg;
    err.hidden = false;
    ctl.setAttribute('aria-invalid', 'true');
    ctl.focus();
    return ctl;
  }
  const slot = form.querySelector('.form-err');
  slot.textContent = msg;
  slot.hidden = false;
  slot.focus();
  return slot;
}

export const formErr = () => h('p.err.form-err', { role: 'alert', tabindex: -1, hidden: true });

export function values(form) {
  const o = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    if (el.type === 'radio') { if (el.checked) o[el.name] = el.value; continue; }
    o[el.name] = el.value;
  }
  return o;
}

export function announce(msg) {
  const a = document.getElementById('announce');
  a.textContent = '';
  setTimeout(() => { a.textContent = msg; }, 30);
}
