// The tenant's LLM connection. The API key is write-only: the server tells
// only whether one is set, and this page never shows or keeps it.

import { api } from './api.js';
import { h, replace, when, field } from './dom.js';
import { errorBox, busy, confirmDialog, section } from './ui.js';

const PROVIDERS = ['offline', 'openai', 'azure', 'anthropic', 'ollama', 'vllm'];

export async function page(ctx) {
  const shown = await api('GET', '/llm');
  // `offline` without a change time: nothing is configured.
  const current = shown.updated_at ? shown : null;
  const off = !ctx.canManage;
  const errors = errorBox();
  const saved = h('span.saved', { role: 'status' });
  const provider = h('select', { name: 'provider', disabled: off }, PROVIDERS.map((p) => h('option', { value: p }, p)));
  provider.value = current ? current.provider : 'offline';
  const model = h('input', { name: 'model', value: current ? current.model : '', disabled: off });
  const baseUrl = h('input', { name: 'base_url', type: 'url', value: (current && current.base_url) || '', disabled: off, placeholder: 'https://… (Ollama, vLLM, a proxy)' });
  const apiKey = h('input', { name: 'api_key', type: 'password', autocomplete: 'off', disabled: off,
    placeholder: current && current.has_api_key ? 'A key is set: leave empty to keep it' : 'Not set' });
  const deployment = h('input', { name: 'azure_deployment', value: (current && current.azure_deployment) || '', disabled: off });
  const version = h('input', { name: 'azure_api_version', value: (current && current.azure_api_version) || '', disabled: off });
  const status = h('p.llm-status', current
    ? `Using ${current.provider}${current.model ? ' · ' + current.model : ''}; API key ${current.has_api_key ? 'set' : 'not set'}${current.updated_at ? ' · changed ' + when(current.updated_at) : ''}.`
    : 'No connection set: the agents answer through the built-in offline responder.');
  const submit = h('button.primary', { type: 'submit', disabled: off }, 'Save');
  const remove = h('button.danger', { type: 'button', disabled: off || !current }, 'Remove connection');
  const form = h('form.llm', field('Provider', provider), field('Model', model), field('Base URL', baseUrl),
    field('API key', apiKey, 'Write-only: it is stored encrypted and never shown again.'),
    h('fieldset', h('legend', 'Azure OpenAI only'), field('Deployment', deployment), field('API version', version)),
    h('div.actions', submit, remove, saved));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    saved.textContent = '';
    const body = { provider: provider.value, model: model.value.trim() };
    if (baseUrl.value.trim()) body.base_url = baseUrl.value.trim();
    if (apiKey.value) body.api_key = apiKey.value;
    if (deployment.value.trim()) body.azure_deployment = deployment.value.trim();
    if (version.value.trim()) body.azure_api_version = version.value.trim();
    const result = await busy(submit, errors, () => api('PUT', '/llm', { body }));
    // The key leaves the page with the request.
    apiKey.value = '';
    if (result) {
      saved.textContent = 'Saved';
      await page(ctx);
    }
  });
  remove.addEventListener('click', async () => {
    if (!(await confirmDialog('Remove the LLM connection? The agents fall back to the offline responder.', { confirm: 'Remove' }))) return;
    const done = await busy(remove, errors, async () => {
      await api('DELETE', '/llm');
      return true;
    });
    if (done) await page(ctx);
  });
  replace(ctx.main, h('h1', 'LLM connection'), ctx.readOnlyNote(), section('Your model', status, errors.el, form));
}
