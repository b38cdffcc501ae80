// Telephony: the Twilio account (auth token write-only), the numbers the
// agents answer, and the senders who opted out of SMS.

import { api } from './api.js';
import { h, replace, when, table, field } from './dom.js';
import { errorBox, busy, confirmDialog, section } from './ui.js';

export async function page(ctx) {
  const off = !ctx.canManage;
  const [{ agents }, numbers, suppressions, account] = await Promise.all([
    api('GET', '/agents'),
    api('GET', '/phone-numbers'),
    api('GET', '/sms-suppressions'),
    api('GET', '/twilio').catch((error) => {
      if (error.status === 404) return null;
      throw error;
    }),
  ]);
  const agentName = new Map(agents.map((a) => [a.id, a.name]));
  const agentSelect = (value, name) => {
    const select = h('select', { name, disabled: off }, agents.map((a) => h('option', { value: a.id }, a.name)));
    if (value) select.value = value;
    return select;
  };

  // The account.
  const accountErrors = errorBox();
  const sid = h('input', { name: 'account_sid', value: account ? account.account_sid : '', required: true, disabled: off, placeholder: 'AC…' });
  const authToken = h('input', { name: 'auth_token', type: 'password', autocomplete: 'off', required: true, disabled: off,
    placeholder: account && account.has_auth_token ? 'Set: enter it again to change the account' : '' });
  const helpText = h('input', { name: 'help_text', value: (account && account.help_text) || '', disabled: off });
  const greeting = h('input', { name: 'voice_greeting', value: (account && account.voice_greeting) || '', disabled: off });
  const escalation = h('input', { name: 'escalation_number', value: (account && account.escalation_number) || '', disabled: off, placeholder: '+14155550100' });
  const saveAccount = h('button.primary', { type: 'submit', disabled: off }, 'Save account');
  const accountForm = h('form.twilio', field('Account SID', sid), field('Auth token', authToken, 'Write-only: stored encrypted, never shown.'),
    field('HELP reply', helpText), field('Voice greeting', greeting), field('Escalation number', escalation), saveAccount);
  accountForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = { account_sid: sid.value.trim(), auth_token: authToken.value };
    for (const [key, input] of [['help_text', helpText], ['voice_greeting', greeting], ['escalation_number', escalation]]) {
      if (input.value.trim()) body[key] = input.value.trim();
    }
    const done = await busy(saveAccount, accountErrors, () => api('PUT', '/twilio', { body }));
    authToken.value = '';
    if (done) await page(ctx);
  });

  // Numbers.
  const numberErrors = errorBox();
  const numberActions = (number) => {
    const select = agentSelect(number.agent_id, 'move_agent');
    select.addEventListener('change', () => busy(select, numberErrors, () =>
      api('PATCH', `/phone-numbers/${number.id}`, { body: { agent_id: select.value } })));
    const remove = h('button.small.danger', { type: 'button', disabled: off }, 'Remove');
    remove.addEventListener('click', async () => {
      if (!(await confirmDialog(`Remove ${number.number}?`, { confirm: 'Remove' }))) return;
      const done = await busy(remove, numberErrors, async () => {
        await api('DELETE', `/phone-numbers/${number.id}`);
        return true;
      });
      if (done) await page(ctx);
    });
    return h('div.row-actions', select, remove);
  };
  const newNumber = h('input', { name: 'number', required: true, disabled: off, placeholder: '+14155550100' });
  const newAgent = agentSelect(null, 'agent_id');
  const addNumber = h('button.primary', { type: 'submit', disabled: off || !agents.length }, 'Add number');
  const numberForm = h('form.add-number', field('Number (E.164)', newNumber), field('Answered by', newAgent), addNumber);
  numberForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const done = await busy(addNumber, numberErrors, () => api('POST', '/phone-numbers', { body: { number: newNumber.value.trim(), agent_id: newAgent.value } }));
    if (done) await page(ctx);
  });

  // Suppressions.
  const suppressionErrors = errorBox();
  const lift = (entry) => {
    const button = h('button.small', { type: 'button', disabled: off }, 'Allow again');
    button.addEventListener('click', async () => {
      if (!(await confirmDialog(`Let ${entry.sender} receive text messages again? Only do this if they asked for it.`, { confirm: 'Allow', danger: false }))) return;
      const done = await busy(button, suppressionErrors, async () => {
        await api('DELETE', `/sms-suppressions/${encodeURIComponent(entry.sender)}`);
        return true;
      });
      if (done) await page(ctx);
    });
    return button;
  };

  replace(ctx.main, h('h1', 'Phone'), ctx.readOnlyNote(),
    section('Twilio account', h('p', account ? `Account ${account.account_sid}, changed ${when(account.updated_at)}.` : 'No Twilio account is set.'),
      accountErrors.el, accountForm),
    section('Numbers', numberErrors.el, table(
      [
        { title: 'Number', cell: (n) => n.number },
        { title: 'Agent', cell: (n) => agentName.get(n.agent_id) || n.agent_id },
        { title: 'Added', cell: (n) => when(n.created_at) },
        { title: '', cell: (n) => numberActions(n) },
      ],
      numbers.phone_numbers,
      { empty: 'No numbers yet.' },
    ), h('h3', 'New number'), numberForm),
    section('SMS opt-outs', suppressionErrors.el, table(
      [
        { title: 'Sender', cell: (s) => s.sender },
        { title: 'Keyword', cell: (s) => s.keyword },
        { title: 'Since', cell: (s) => when(s.created_at) },
        { title: '', cell: (s) => lift(s) },
      ],
      suppressions.suppressions,
      { empty: 'Nobody opted out.' },
    )));
}
