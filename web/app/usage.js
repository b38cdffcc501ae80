// Usage for billing: turns and tokens per day and per model.

import { api } from './api.js';
import { h, replace, table, field } from './dom.js';
import { errorBox, busy, section } from './ui.js';

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

export async function page(ctx) {
  const today = new Date();
  const monthAgo = new Date(today.getTime() - 29 * 86_400_000);
  const from = h('input', { type: 'date', name: 'from', value: isoDay(monthAgo), required: true });
  const to = h('input', { type: 'date', name: 'to', value: isoDay(today), required: true });
  const show = h('button.primary', { type: 'submit' }, 'Show');
  const errors = errorBox();
  const report = h('div.report');
  const form = h('form.filters', field('From', from), field('To', to), show);
  const load = async () => {
    const usage = await api('GET', '/usage', { query: { from: from.value, to: to.value } });
    const number = (n) => Number(n).toLocaleString();
    replace(report,
      h('dl.totals',
        h('dt', 'Turns'), h('dd.turns', number(usage.total.turns)),
        h('dt', 'Events'), h('dd', number(usage.total.events)),
        h('dt', 'Prompt tokens'), h('dd', number(usage.total.prompt_tokens)),
        h('dt', 'Completion tokens'), h('dd', number(usage.total.completion_tokens))),
      h('h3', 'By model'),
      table(
        [
          { title: 'Kind', cell: (m) => m.kind },
          { title: 'Provider', cell: (m) => m.provider },
          { title: 'Model', cell: (m) => m.model },
          { title: 'Events', cell: (m) => number(m.events) },
          { title: 'Prompt tokens', cell: (m) => number(m.prompt_tokens) },
          { title: 'Completion tokens', cell: (m) => number(m.completion_tokens) },
        ],
        usage.total.by_model,
        { empty: 'No usage in this range.' },
      ),
      h('h3', 'By day'),
      table(
        [
          { title: 'Day', cell: (d) => d.day },
          { title: 'Turns', cell: (d) => number(d.turns) },
          { title: 'Prompt tokens', cell: (d) => number(d.prompt_tokens) },
          { title: 'Completion tokens', cell: (d) => number(d.completion_tokens) },
        ],
        usage.days.filter((d) => d.events > 0),
        { empty: 'No usage in this range.' },
      ));
  };
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(show, errors, load);
  });
  replace(ctx.main, h('h1', 'Usage'), section('Range', form), errors.el, report);
  await load();
}
