// Webhook endpoints (the signing secret is shown once, when made or rotated)
// and the delivery attempts, with redeliver.

import { api } from './api.js';
import { h, replace, when, table, field } from './dom.js';
import { errorBox, busy, confirmDialog, secretDialog, section } from './ui.js';

const EVENT_TYPES = ['lead.created', 'lead.updated', 'booking.requested', 'quote.requested', 'support.escalated'];

export async function page(ctx) {
  const errors = errorBox();
  const endpointsBox = h('div.endpoints');
  const deliveriesBox = h('div.deliveries');
  const off = !ctx.canManage;
  let endpoints = [];

  const loadEndpoints = async () => {
    endpoints = (await api('GET', '/webhook-endpoints')).webhook_endpoints;
    drawEndpoints();
  };
  const drawEndpoints = () => replace(endpointsBox, table(
    [
      { title: 'URL', cell: (e) => h('code', e.url) },
      { title: 'Events', cell: (e) => e.event_types.join(', ') },
      { title: 'Description', cell: (e) => e.description },
      { title: 'Secret', cell: (e) => h('code.masked', e.secret_masked) },
      { title: 'State', cell: (e) => (e.enabled ? 'enabled' : 'disabled') },
      { title: '', cell: (e) => endpointActions(e) },
    ],
    endpoints,
    { empty: 'No endpoints yet.', rowAttrs: (e) => ({ dataset: { endpointId: e.id } }) },
  ));
  const endpointActions = (endpoint) => {
    const rotate = h('button.small.rotate', { type: 'button', disabled: off }, 'Rotate secret');
    rotate.addEventListener('click', async () => {
      if (!(await confirmDialog('Rotate the signing secret? The current one keeps signing beside the new one for a grace period.', { confirm: 'Rotate', danger: false }))) return;
      const rotated = await busy(rotate, errors, () => api('POST', `/webhook-endpoints/${endpoint.id}/rotate-secret`));
      if (rotated) {
        await secretDialog('New signing secret', rotated.secret);
        await loadEndpoints();
      }
    });
    const toggle = h('button.small.toggle', { type: 'button', disabled: off }, endpoint.enabled ? 'Disable' : 'Enable');
    toggle.addEventListener('click', () => busy(toggle, errors, async () => {
      await api('PATCH', `/webhook-endpoints/${endpoint.id}`, { body: { enabled: !endpoint.enabled } });
      await loadEndpoints();
    }));
    const remove = h('button.small.danger', { type: 'button', disabled: off }, 'Delete');
    remove.addEventListener('click', async () => {
      if (!(await confirmDialog(`Delete the endpoint ${endpoint.url}?`))) return;
      await busy(remove, errors, async () => {
        await api('DELETE', `/webhook-endpoints/${endpoint.id}`);
        await loadEndpoints();
      });
    });
    return h('div.row-actions', rotate, toggle, remove);
  };

  const url = h('input', { name: 'url', type: 'url', required: true, maxlength: 2048, disabled: off, placeholder: 'https://crm.example.com/hooks/agentry' });
  const description = h('input', { name: 'description', maxlength: 500, disabled: off });
  const events = EVENT_TYPES.map((type) => h('input', { type: 'checkbox', name: 'event_types', value: type, checked: true, disabled: off }));
  const create = h('button.primary', { type: 'submit', disabled: off }, 'Add endpoint');
  const form = h('form.create-endpoint', field('URL', url), field('Description', description),
    h('fieldset', h('legend', 'Events'), events.map((box) => h('label.check', box, ' ', box.value))), create);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = {
      url: url.value.trim(),
      description: description.value,
      event_types: events.filter((box) => box.checked).map((box) => box.value),
    };
    const created = await busy(create, errors, () => api('POST', '/webhook-endpoints', { body }));
    if (created) {
      form.reset();
      await secretDialog('Signing secret', created.secret,
        'Your receiver checks each delivery’s signature with this secret. Copy it now: it is shown this once.');
      await loadEndpoints();
    }
  });

  const deliveryErrors = errorBox();
  const deliveryState = h('select', { name: 'delivery_state' },
    ['', 'success', 'retrying', 'failed', 'blocked'].map((s) => h('option', { value: s }, s || 'Any outcome')));
  const refresh = h('button', { type: 'submit' }, 'Refresh');
  const deliveryFilter = h('form.filters', field('Outcome', deliveryState), refresh);
  let deliveries = [];
  let cursor = null;
  const more = h('button', { type: 'button', hidden: true }, 'Load more');
  const loadDeliveries = async (append) => {
    const page = await api('GET', '/webhook-deliveries', { query: { limit: 50, state: deliveryState.value, cursor: append ? cursor : undefined } });
    deliveries = append ? deliveries.concat(page.deliveries) : page.deliveries;
    cursor = page.next_cursor;
    more.hidden = !cursor;
    drawDeliveries();
  };
  const endpointUrl = (id) => (endpoints.find((e) => e.id === id) || {}).url || id;
  const drawDeliveries = () => replace(deliveriesBox, table(
    [
      { title: 'When', cell: (d) => when(d.created_at) },
      { title: 'Event', cell: (d) => d.event_type },
      { title: 'Endpoint', cell: (d) => endpointUrl(d.endpoint_id) },
      { title: 'Attempt', cell: (d) => String(d.attempt) },
      { title: 'Outcome', cell: (d) => h(`span.status.s-${d.state}`, d.state) },
      { title: 'Response', cell: (d) => [d.response_status ? String(d.response_status) : '', d.error ? ` ${d.error}` : ''].join('') },
      { title: '', cell: (d) => redeliverButton(d) },
    ],
    deliveries,
    { empty: 'No deliveries yet.', rowAttrs: (d) => ({ dataset: { deliveryId: d.id } }) },
  ));
  const redeliverButton = (delivery) => {
    const button = h('button.small', { type: 'button', disabled: off }, 'Redeliver');
    button.addEventListener('click', () => busy(button, deliveryErrors, async () => {
      await api('POST', `/webhook-deliveries/${delivery.id}/redeliver`);
      button.textContent = 'Scheduled';
      setTimeout(() => busy(null, deliveryErrors, () => loadDeliveries(false)), 1500);
    }));
    return button;
  };
  deliveryFilter.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(refresh, deliveryErrors, () => loadDeliveries(false));
  });
  more.addEventListener('click', () => busy(more, deliveryErrors, () => loadDeliveries(true)));

  replace(ctx.main, h('h1', 'Webhooks'), ctx.readOnlyNote(),
    section('Endpoints', errors.el, endpointsBox, h('h3', 'New endpoint'), form),
    section('Deliveries', deliveryFilter, deliveryErrors.el, deliveriesBox, more));
  await loadEndpoints();
  await loadDeliveries(false);
}
