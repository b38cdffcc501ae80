// Leads the agents captured (and those added by hand or through the API).

import { api } from './api.js';
import { h, replace, when, table } from './dom.js';
import { errorBox, busy, section } from './ui.js';

export async function page(ctx) {
  const errors = errorBox();
  const results = h('div');
  const more = h('button', { type: 'button', hidden: true }, 'Load more');
  let rows = [];
  let cursor = null;
  const draw = () => replace(results, table(
    [
      { title: 'Name', cell: (l) => l.name || '' },
      { title: 'Email', cell: (l) => l.email || '' },
      { title: 'Phone', cell: (l) => l.phone || '' },
      { title: 'Notes', cell: (l) => l.notes || '' },
      { title: 'Conversation', cell: (l) => (l.source_conversation_id ? h('a', { href: `#/conversations/${l.source_conversation_id}` }, 'open') : '') },
      { title: 'Captured', cell: (l) => when(l.created_at) },
    ],
    rows,
    { empty: 'No leads yet.', rowAttrs: (l) => ({ dataset: { leadId: l.id } }) },
  ));
  const load = async (append) => {
    const page = await api('GET', '/leads', { query: { limit: 50, cursor: append ? cursor : undefined } });
    rows = append ? rows.concat(page.leads) : page.leads;
    cursor = page.next_cursor;
    more.hidden = !cursor;
    draw();
  };
  more.addEventListener('click', () => busy(more, errors, () => load(true)));
  replace(ctx.main, h('h1', 'Leads'), section('Captured leads', errors.el, results, more));
  await load(false);
}
