// API tokens for the tenant's own automation: the token is shown once, when made.

import { api } from './api.js';
import { h, replace, when, table, field } from './dom.js';
import { errorBox, busy, confirmDialog, secretDialog, section } from './ui.js';

const SCOPES = ['leads:read', 'leads:write', 'conversations:read', 'knowledge:write', 'webhooks:read', 'webhooks:write'];

export async function page(ctx) {
  const off = !ctx.canManage;
  const errors = errorBox();
  const listBox = h('div');
  const load = async () => {
    const { api_tokens: tokens } = await api('GET', '/api-tokens');
    replace(listBox, table(
      [
        { title: 'Name', cell: (t) => t.name },
        { title: 'Token', cell: (t) => h('code.masked', t.token_masked) },
        { title: 'Scopes', cell: (t) => t.scopes.join(', ') },
        { title: 'Status', cell: (t) => h(`span.status.s-${t.status}`, t.status) },
        { title: 'Expires', cell: (t) => when(t.expires_at) },
        { title: 'Last used', cell: (t) => when(t.last_used_at) || 'never' },
        { title: '', cell: (t) => (t.status === 'active' ? revokeButton(t) : '') },
      ],
      tokens,
      { empty: 'No API tokens yet.', rowAttrs: (t) => ({ dataset: { tokenId: t.id, status: t.status } }) },
    ));
  };
  const revokeButton = (token) => {
    const button = h('button.small.danger', { type: 'button', disabled: off }, 'Revoke');
    button.addEventListener('click', async () => {
      if (!(await confirmDialog(`Revoke the token “${token.name}”? Whatever uses it stops working at once.`, { confirm: 'Revoke' }))) return;
      await busy(button, errors, async () => {
        await api('DELETE', `/api-tokens/${token.id}`);
        await load();
      });
    });
    return button;
  };
  const name = h('input', { name: 'name', required: true, maxlength: 200, disabled: off });
  const days = h('input', { name: 'lifetime_days', type: 'number', min: 1, max: 365, placeholder: '90', disabled: off });
  const scopes = SCOPES.map((scope) => h('input', { type: 'checkbox', name: 'scopes', value: scope, disabled: off }));
  const create = h('button.primary', { type: 'submit', disabled: off }, 'Create token');
  const form = h('form.create-token', field('Name', name), field('Lifetime in days', days),
    h('fieldset', h('legend', 'Scopes'), scopes.map((box) => h('label.check', box, ' ', box.value))), create);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = { name: name.value, scopes: scopes.filter((b) => b.checked).map((b) => b.value) };
    if (days.value) body.lifetime_days = Number(days.value);
    const created = await busy(create, errors, () => api('POST', '/api-tokens', { body }));
    if (created) {
      form.reset();
      await secretDialog('API token', created.token);
      await load();
    }
  });
  replace(ctx.main, h('h1', 'API tokens'), ctx.readOnlyNote(),
    section('Tokens', errors.el, listBox, h('h3', 'New token'), form));
  await load();
}
