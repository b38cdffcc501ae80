// Agents: the list, and one agent's settings (prompt, profile, directives),
// knowledge base and widgets.

import { api } from './api.js';
import { h, replace, when, table, field, lines } from './dom.js';
import { errorBox, busy, confirmDialog, section, copyText } from './ui.js';

const DIRECTIVES = [
  ['no_financing_quotes', 'No financing quotes', 'No APR, interest rate or monthly payment figures.'],
  ['no_trade_in_values', 'No trade-in values', 'No dollar figure for a trade-in or appraisal.'],
  ['competitor_deflection', 'Competitor deflection', 'No recommending, pricing or comparing the competitors listed.'],
  ['escalation_topics', 'Escalation topics go to a person', 'A visitor raising one of the escalation topics is handed to a person.'],
];

export async function list(ctx) {
  const { agents } = await api('GET', '/agents');
  const errors = errorBox();
  const name = h('input', { name: 'name', required: true, maxlength: 200, disabled: !ctx.canManage });
  const prompt = h('textarea', { name: 'system_prompt', rows: 4, maxlength: 20000, disabled: !ctx.canManage });
  const submit = h('button.primary', { type: 'submit', disabled: !ctx.canManage }, 'Create agent');
  const form = h('form.create-agent', field('Name', name), field('System prompt', prompt), submit);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const created = await busy(submit, errors, () =>
      api('POST', '/agents', { body: { name: name.value, system_prompt: prompt.value } }));
    if (created) location.hash = `#/agents/${created.id}`;
  });
  replace(
    ctx.main,
    h('h1', 'Agents'),
    ctx.readOnlyNote(),
    section('Your agents',
      table(
        [
          { title: 'Name', cell: (a) => h('a', { href: `#/agents/${a.id}` }, a.name) },
          { title: 'Brand', cell: (a) => (a.profile && a.profile.brand) || '' },
          { title: 'Updated', cell: (a) => when(a.updated_at) },
        ],
        agents,
        { empty: 'No agents yet: create the first one below.', rowAttrs: (a) => ({ dataset: { agentId: a.id } }) },
      )),
    section('New agent', errors.el, form),
  );
}

function directiveValue(value) {
  if (value && typeof value === 'object') return { enabled: !!value.enabled, wording: value.wording || '' };
  return { enabled: !!value, wording: '' };
}

export async function detail(ctx, id) {
  const [agent, { documents }, { widgets }] = await Promise.all([
    api('GET', `/agents/${id}`),
    api('GET', `/agents/${id}/documents`),
    api('GET', `/agents/${id}/widgets`),
  ]);
  const knowledge = h('div.knowledge');
  const widgetList = h('div.widgets');
  replace(
    ctx.main,
    h('p.crumbs', h('a', { href: '#/agents' }, 'Agents'), ' / ', agent.name),
    h('h1', agent.name),
    ctx.readOnlyNote(),
    settingsSection(ctx, agent),
    section('Knowledge base', knowledge),
    section('Widgets', widgetList),
    deleteSection(ctx, agent),
  );
  renderKnowledge(ctx, agent, knowledge, documents);
  renderWidgets(ctx, agent, widgetList, widgets);
}

function settingsSection(ctx, agent) {
  const profile = agent.profile || {};
  const off = !ctx.canManage;
  const errors = errorBox();
  const saved = h('span.saved', { role: 'status' });
  const name = h('input', { name: 'name', value: agent.name, required: true, maxlength: 200, disabled: off });
  const prompt = h('textarea', { name: 'system_prompt', rows: 6, maxlength: 20000, disabled: off, value: agent.system_prompt });
  const brand = h('input', { name: 'brand', value: profile.brand || '', maxlength: 200, disabled: off });
  const facts = h('textarea', { name: 'facts', rows: 4, disabled: off, value: (profile.facts || []).join('\n') });
  const competitors = h('textarea', { name: 'competitors', rows: 2, disabled: off, value: (profile.competitors || []).join('\n') });
  const topics = h('textarea', { name: 'escalation_topics', rows: 2, disabled: off, value: (profile.escalation_topics || []).join('\n') });
  const fallback = h('input', { name: 'fallback', value: profile.fallback || '', maxlength: 1000, disabled: off });
  const scrub = h('input', { type: 'checkbox', name: 'scrub_visitor_messages', checked: !!profile.scrub_visitor_messages, disabled: off });
  const directives = DIRECTIVES.map(([key, label, hint]) => {
    const current = directiveValue((profile.directives || {})[key]);
    const enabled = h('input', { type: 'checkbox', name: `directive-${key}`, checked: current.enabled, disabled: off });
    const wording = h('input', { name: `wording-${key}`, value: current.wording, maxlength: 500, placeholder: 'Your own wording (optional)', disabled: off });
    return { key, enabled, wording, el: h('div.directive', h('label', enabled, ' ', label), h('small.hint', hint), wording) };
  });
  const submit = h('button.primary', { type: 'submit', disabled: off }, 'Save');
  const form = h('form.agent-settings',
    field('Name', name),
    field('System prompt', prompt),
    h('fieldset', h('legend', 'Profile'),
      field('Brand', brand),
      field('Facts', facts, 'One per line.'),
      field('Competitors', competitors, 'One per line.'),
      field('Escalation topics', topics, 'One per line.'),
      field('Fallback reply', fallback, 'Said instead of a reply the guardrails removed entirely.'),
      h('div.field', h('label', scrub, ' Store visitor messages with contact details and card numbers replaced'))),
    h('fieldset.directives', h('legend', 'Directives'), directives.map((d) => d.el)),
    h('div.actions', submit, saved));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    saved.textContent = '';
    const body = {
      name: name.value,
      system_prompt: prompt.value,
      profile: {
        brand: brand.value.trim() || null,
        facts: lines(facts.value),
        competitors: lines(competitors.value),
        escalation_topics: lines(topics.value),
        fallback: fallback.value.trim() || null,
        scrub_visitor_messages: scrub.checked,
        directives: Object.fromEntries(directives.map((d) => [
          d.key,
          d.wording.value.trim() ? { enabled: d.enabled.checked, wording: d.wording.value.trim() } : d.enabled.checked,
        ])),
      },
    };
    const updated = await busy(submit, errors, () => api('PATCH', `/agents/${agent.id}`, { body }));
    if (updated) {
      saved.textContent = 'Saved';
      Object.assign(agent, updated);
      const heading = ctx.main.querySelector('h1');
      if (heading) heading.textContent = updated.name;
    }
  });
  return section('Settings', errors.el, form);
}

function deleteSection(ctx, agent) {
  const errors = errorBox();
  const button = h('button.danger', { type: 'button', disabled: !ctx.canManage }, 'Delete this agent');
  button.addEventListener('click', async () => {
    if (!(await confirmDialog(`Delete ${agent.name} with its widgets and knowledge base?`))) return;
    const done = await busy(button, errors, async () => {
      await api('DELETE', `/agents/${agent.id}`);
      return true;
    });
    if (done) location.hash = '#/agents';
  });
  return section('Delete', errors.el, button);
}

function renderKnowledge(ctx, agent, container, documents) {
  const off = !ctx.canManage;
  const errors = errorBox();
  const listBox = h('div.documents');
  let pollTimer = null;
  let pollDelay = 2000;

  const refresh = async () => {
    try {
      const fresh = await api('GET', `/agents/${agent.id}/documents`);
      draw(fresh.documents);
    } catch (error) {
      errors.show(error);
    }
  };
  const schedulePoll = (docs) => {
    clearTimeout(pollTimer);
    // Ingestion is asynchronous: look again while a document is pending,
    // less often each time (every look counts on the rate limit).
    if (!docs.some((d) => d.status === 'pending' || d.status === 'processing')) {
      pollDelay = 2000;
      return;
    }
    pollTimer = setTimeout(() => {
      if (listBox.isConnected) refresh();
    }, pollDelay);
    pollDelay = Math.min(pollDelay * 2, 30_000);
  };
  const draw = (docs) => {
    replace(listBox, table(
      [
        { title: 'Title', cell: (d) => d.title },
        { title: 'Type', cell: (d) => d.content_type },
        { title: 'Status', cell: (d) => h(`span.status.s-${d.status}`, d.status, d.failure_reason ? `: ${d.failure_reason}` : '') },
        { title: 'Chunks', cell: (d) => String(d.chunk_count) },
        { title: 'Added', cell: (d) => when(d.created_at) },
        { title: '', cell: (d) => removeButton(d) },
      ],
      docs,
      { empty: 'No documents yet.', rowAttrs: (d) => ({ dataset: { documentId: d.id, status: d.status } }) },
    ));
    schedulePoll(docs);
  };
  const removeButton = (doc) => {
    const button = h('button.small.danger', { type: 'button', disabled: off }, 'Delete');
    button.addEventListener('click', async () => {
      if (!(await confirmDialog(`Delete the document “${doc.title}”?`))) return;
      await busy(button, errors, async () => {
        await api('DELETE', `/agents/${agent.id}/documents/${doc.id}`);
        await refresh();
      });
    });
    return button;
  };

  const title = h('input', { name: 'title', required: true, maxlength: 300, disabled: off });
  const type = h('select', { name: 'content_type', disabled: off },
    h('option', { value: 'text' }, 'Plain text'),
    h('option', { value: 'markdown' }, 'Markdown'),
    h('option', { value: 'html' }, 'HTML'));
  const content = h('textarea', { name: 'content', rows: 6, required: true, disabled: off });
  const add = h('button.primary', { type: 'submit', disabled: off }, 'Add document');
  const form = h('form.add-document', field('Title', title), field('Format', type), field('Content', content), add);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const created = await busy(add, errors, () => api('POST', `/agents/${agent.id}/documents`, {
      body: { title: title.value, content: content.value, content_type: type.value },
    }));
    if (created) {
      form.reset();
      pollDelay = 1000;
      await refresh();
    }
  });

  const file = h('input', { type: 'file', name: 'file', disabled: off });
  const upload = h('button', { type: 'submit', disabled: off }, 'Upload file');
  const uploaded = h('p.uploaded', { role: 'status' });
  const fileForm = h('form.upload-file', field('File (text, Markdown, HTML, PDF …)', file,
    'Stored encrypted and scanned; once clean it becomes a document of this agent.'), upload, uploaded);
  fileForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!file.files.length) {
      errors.show({ message: 'Choose a file first.' });
      return;
    }
    const form = new FormData();
    form.append('agent_id', agent.id);
    form.append('file', file.files[0]);
    const stored = await busy(upload, errors, () => api('POST', '/files', { body: form }));
    if (stored) {
      uploaded.textContent = `${stored.name}: ${stored.scan_status}`;
      fileForm.reset();
      pollDelay = 1000;
      setTimeout(refresh, 1000);
    }
  });

  replace(container, errors.el, listBox,
    h('details.add', { open: documents.length === 0 && !off },
      h('summary', 'Add a document'), form, fileForm));
  draw(documents);
}

export function embedSnippet(publicKey) {
  return `<script src="${location.origin}/widget.js" data-public-key="${publicKey}" async></script>`;
}

function renderWidgets(ctx, agent, container, widgets) {
  const off = !ctx.canManage;
  const errors = errorBox();
  const refresh = async () => {
    const fresh = await api('GET', `/agents/${agent.id}/widgets`);
    draw(fresh.widgets);
  };
  const card = (widget) => {
    const origins = h('textarea', { name: 'allowed_origins', rows: 2, disabled: off, value: widget.allowed_origins.join('\n') });
    const save = h('button', { type: 'submit', disabled: off }, 'Save origins');
    const remove = h('button.danger', { type: 'button', disabled: off }, 'Delete widget');
    const copied = h('span.copied', { role: 'status' });
    const snippet = embedSnippet(widget.public_key);
    const form = h('form.widget-origins', field('Allowed origins', origins, 'One per line, such as https://shop.example.com'),
      h('div.actions', save, remove));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      await busy(save, errors, async () => {
        await api('PATCH', `/agents/${agent.id}/widgets/${widget.id}`, { body: { allowed_origins: lines(origins.value) } });
        await refresh();
      });
    });
    remove.addEventListener('click', async () => {
      if (!(await confirmDialog('Delete this widget? Sites embedding it stop working.'))) return;
      await busy(remove, errors, async () => {
        await api('DELETE', `/agents/${agent.id}/widgets/${widget.id}`);
        await refresh();
      });
    });
    return h('div.widget', { dataset: { widgetId: widget.id, publicKey: widget.public_key } },
      h('p', 'Public key ', h('code.public-key', widget.public_key)),
      h('p', 'Embed it on your site:'),
      h('div.snippet', h('pre', h('code.embed', snippet)),
        h('button.copy', { type: 'button', onclick: () => copyText(snippet, copied) }, 'Copy'), copied),
      form);
  };
  const listBox = h('div');
  const draw = (list) => replace(listBox, list.length ? list.map(card) : h('p.empty', 'No widgets yet.'));

  const origins = h('textarea', { name: 'new_allowed_origins', rows: 2, disabled: off, placeholder: 'https://shop.example.com' });
  const create = h('button.primary', { type: 'submit', disabled: off }, 'Create widget');
  const form = h('form.create-widget', field('Allowed origins', origins, 'One per line.'), create);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    await busy(create, errors, async () => {
      await api('POST', `/agents/${agent.id}/widgets`, { body: { allowed_origins: lines(origins.value) } });
      form.reset();
      await refresh();
    });
  });
  replace(container, errors.el, listBox, h('h3', 'New widget'), form);
  draw(widgets);
}
