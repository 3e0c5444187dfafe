// Sign-in: the development sign-in on the embedded default (says so on
// screen), or OpenID Connect (authorization code + PKCE) with Keycloak.
import { h, field, formErr, values, clearErrors, showError, announce } from './dom.js';
import { t } from './i18n.js';
import { auth } from './auth.js';
import { heading, fieldOf, persist } from './ui.js';

export function signinView(ctx) {
  const back = ctx.params.get('back') || '#/';
  const box = h('div', t('loading'));
  const root = h('section.narrow', heading(t('signin_title')), box);
  auth.config().then((c) => {
    if (c.mode === 'oidc') {
      box.replaceChildren(h('p', t('oidc_notice')),
        h('button.primary', { type: 'button', onclick: () => auth.oidcStart(back) }, t('oidc_btn')));
      return;
    }
    if (c.mode !== 'dev') { box.replaceChildren(h('p.err', t('no_signin'))); return; }
    const form = h('form', { novalidate: true },
      h('p.notice', { role: 'note' }, h('strong', 'DEV '), t('dev_notice')),
      field(t('name'), 'sub', { required: true, autocomplete: 'username', maxlength: 64, pattern: '[A-Za-z0-9._@-]+' }, t('name_hint')),
      h('fieldset.field', { 'data-field': 'role' }, h('legend', t('role')),
        h('label.radio', h('input', { type: 'radio', name: 'role', value: 'guest', checked: true }), ' ', t('as_guest')),
        h('label.radio', h('input', { type: 'radio', name: 'role', value: 'host' }), ' ', t('as_host')),
        h('p.err', { hidden: true })),
      formErr(),
      h('button.primary', { type: 'submit' }, t('signin')));
    persist(form, 'signin');
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      const v = values(form);
      if (!/^[A-Za-z0-9._@-]{1,64}$/.test(v.sub)) { showError(form, 'sub', t('name_hint')); return; }
      try {
        await auth.devSignIn(v.sub, v.role);
      } catch (e) {
        const d = e.problem && (e.problem.detail || e.problem.title);
        showError(form, d ? fieldOf(form, d) : null, d || e.message);
        return;
      }
      announce(t('signed_in', { name: v.sub }));
      ctx.go(back);
    });
    box.replaceChildren(form);
  });
  return root;
}
