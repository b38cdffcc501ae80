// Conversations: the list with its filters and search, and one transcript
// with live takeover (take over, reply as a person, hand back), kept current
// by the dashboard's event stream.

import { api } from './api.js';
import { h, replace, when, table, field } from './dom.js';
import { errorBox, busy, section } from './ui.js';

const STATES = [
  ['', 'Any state'],
  ['agent', 'Agent answering'],
  ['waiting', 'Waiting for a person'],
  ['human', 'Taken over'],
];

// A server from before takeover filters by `status` (open, waiting_for_human)
// and refuses `state`; learned once, from its answer.
let legacyStatus = false;

function stateOf(conversation) {
  if (conversation.state) return conversation.state;
  return conversation.status === 'waiting_for_human' ? 'waiting' : 'agent';
}

const STATE_LABELS = { agent: 'agent', waiting: 'waiting for a person', human: 'taken over' };

function stateBadge(conversation) {
  const state = stateOf(conversation);
  return h(`span.state.st-${state}`, STATE_LABELS[state] || state);
}

function stateQuery(state) {
  if (!state) return {};
  if (legacyStatus) return state === 'waiting' ? { status: 'waiting_for_human' } : state === 'agent' ? { status: 'open' } : {};
  return { state };
}

async function listPage(query) {
  try {
    return await api('GET', '/conversations', { query: { ...query, ...stateQuery(query.stateFilter), stateFilter: undefined } });
  } catch (error) {
    if (!legacyStatus && query.stateFilter && error.status === 400 && /state/.test(error.message)) {
      legacyStatus = true;
      return listPage(query);
    }
    throw error;
  }
}

/** The conversations waiting for a person (the shell's badge). */
export async function fetchWaiting() {
  const page = await listPage({ stateFilter: 'waiting', limit: 200 });
  return page.conversations.filter((c) => stateOf(c) === 'waiting');
}

function dayStart(date) {
  return date ? new Date(`${date}T00:00:00`).toISOString() : undefined;
}

function dayEnd(date) {
  if (!date) return undefined;
  const end = new Date(`${date}T00:00:00`);
  end.setDate(end.getDate() + 1);
  return end.toISOString();
}

export async function list(ctx) {
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const { agents } = await api('GET', '/agents');
  const agentNames = new Map(agents.map((a) => [a.id, a.name]));
  const errors = errorBox();
  const state = h('select', { name: 'state' }, STATES.map(([value, label]) => h('option', { value }, label)));
  const agent = h('select', { name: 'agent_id' }, h('option', { value: '' }, 'Any agent'),
    agents.map((a) => h('option', { value: a.id }, a.name)));
  const q = h('input', { type: 'search', name: 'q', maxlength: 200, placeholder: 'Text in a message' });
  const after = h('input', { type: 'date', name: 'from' });
  const before = h('input', { type: 'date', name: 'to' });
  state.value = params.get('state') || '';
  const apply = h('button.primary', { type: 'submit' }, 'Search');
  const filters = h('form.filters', field('State', state), field('Agent', agent), field('Search', q),
    field('From', after), field('To', before), apply);
  const results = h('div.results');
  const more = h('button', { type: 'button', hidden: true }, 'Load more');
  let cursor = null;
  let rows = [];

  const draw = () => replace(results, table(
    [
      { title: 'Started', cell: (c) => h('a', { href: `#/conversations/${c.id}` }, when(c.started_at)) },
      { title: 'Agent', cell: (c) => agentNames.get(c.agent_id) || c.agent_id },
      { title: 'Channel', cell: (c) => c.channel },
      { title: 'State', cell: (c) => stateBadge(c) },
      { title: 'Lead', cell: (c) => (c.lead_id ? h('a', { href: '#/leads' }, 'lead') : '') },
      { title: 'Escalation', cell: (c) => c.escalation_reason || '' },
    ],
    rows,
    { empty: 'No conversations match.', rowAttrs: (c) => ({ dataset: { conversationId: c.id, state: stateOf(c) } }) },
  ));

  // The filter of the rows shown, for live additions: only a list filtered by
  // state alone can tell that a conversation belongs in it.
  let shownFilter = {};
  const load = async (append) => {
    shownFilter = { state: state.value, other: !!(agent.value || q.value.trim() || after.value || before.value) };
    const page = await listPage({
      stateFilter: state.value,
      agent_id: agent.value,
      q: q.value.trim(),
      started_after: dayStart(after.value),
      started_before: dayEnd(before.value),
      cursor: append ? cursor : undefined,
      limit: 50,
    });
    rows = append ? rows.concat(page.conversations) : page.conversations;
    cursor = page.next_cursor;
    more.hidden = !cursor;
    draw();
  };
  filters.addEventListener('submit', async (event) => {
    event.preventDefault();
    await busy(apply, errors, () => load(false));
  });
  more.addEventListener('click', () => busy(more, errors, () => load(true)));
  ctx.listen('conversation', ({ conversation }) => {
    const index = rows.findIndex((c) => c.id === conversation.id);
    if (index >= 0) {
      rows[index] = { ...rows[index], ...conversation };
      draw();
    } else if (shownFilter.state === stateOf(conversation) && !shownFilter.other) {
      // Newly waiting (or taken): it belongs at the top of a list of those.
      rows.unshift(conversation);
      draw();
    }
  });
  replace(ctx.main, h('h1', 'Conversations'), section('Find', filters), errors.el, results, more);
  await busy(null, errors, () => load(false));
}

function messageNode(message) {
  const human = message.human === true;
  const who = message.role === 'visitor' ? 'Visitor' : human ? 'Team member' : 'Agent';
  return h(`li.msg.${message.role}${human ? '.human' : ''}`,
    { dataset: { role: message.role, human: String(human), messageId: message.id } },
    h('div.meta', h('span.who', who), ' ', h('time', when(message.created_at))),
    h('div.text', message.content));
}

export async function detail(ctx, id) {
  const data = await api('GET', `/conversations/${id}`);
  // The detail is the conversation's fields and its `messages` side by side.
  const { messages: initialMessages, ...fields } = data;
  let conversation = data.conversation || fields;
  const seen = new Set();
  const transcript = h('ol.transcript', { 'aria-live': 'polite' });
  const addMessage = (message) => {
    if (!message || seen.has(message.id)) return;
    seen.add(message.id);
    // In order of `seq` where the server gives it, else as it came.
    const node = messageNode(message);
    node.dataset.seq = message.seq ?? '';
    const later = message.seq !== undefined
      ? [...transcript.children].find((li) => li.dataset.seq !== '' && Number(li.dataset.seq) > message.seq)
      : null;
    transcript.insertBefore(node, later || null);
    if (replyBox.isConnected) node.scrollIntoView({ block: 'nearest' });
  };

  const errors = errorBox();
  const summary = h('dl.summary');
  const controls = h('div.takeover');
  const replyText = h('textarea', { name: 'reply', rows: 3, maxlength: 4000, placeholder: 'Your reply to the visitor' });
  const send = h('button.primary', { type: 'submit' }, 'Send');
  const replyBox = h('form.reply', field('Reply as a person', replyText), send);

  const drawSummary = () => replace(summary,
    h('dt', 'Channel'), h('dd', conversation.channel),
    h('dt', 'State'), h('dd', stateBadge(conversation)),
    h('dt', 'Started'), h('dd', when(conversation.started_at)),
    conversation.escalation_reason ? [h('dt', 'Escalated'), h('dd', conversation.escalation_reason)] : null,
    conversation.lead_id ? [h('dt', 'Lead'), h('dd', h('a', { href: '#/leads' }, 'captured'))] : null);

  const drawControls = () => {
    const state = stateOf(conversation);
    const mine = state === 'human' && conversation.taken_over_by === ctx.me.user_id;
    const take = h('button.primary.take', { type: 'button' }, state === 'human' ? 'Take over from them' : 'Take over');
    take.addEventListener('click', () => busy(take, errors, async () => {
      const answer = await api('POST', `/conversations/${id}/takeover`);
      conversation = { ...conversation, ...answer.conversation };
      drawAll();
      replyText.focus();
    }));
    const back = h('button.handback', { type: 'button' }, 'Hand back to the agent');
    back.addEventListener('click', () => busy(back, errors, async () => {
      const answer = await api('POST', `/conversations/${id}/handback`);
      conversation = { ...conversation, ...answer.conversation };
      drawAll();
    }));
    replace(controls,
      mine
        ? [h('p.note', 'You are answering this conversation: the agent stays silent until you hand it back.'), back]
        : state === 'human'
          ? [h('p.note', 'Another team member is answering this conversation.'), take]
          : [h('p.note', state === 'waiting' ? 'The visitor is waiting for a person.' : 'The agent is answering.'), take]);
    replyBox.hidden = !mine;
  };
  const drawAll = () => {
    drawSummary();
    drawControls();
  };

  replyBox.addEventListener('submit', async (event) => {
    event.preventDefault();
    const text = replyText.value.trim();
    if (!text) return;
    const answer = await busy(send, errors, () => api('POST', `/conversations/${id}/messages`, { body: { text } }));
    if (answer) {
      replyText.value = '';
      addMessage(answer.message);
    }
  });
  replyText.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey) {
      event.preventDefault();
      replyBox.requestSubmit();
    }
  });

  ctx.listen('message', (event) => {
    if (event.conversation_id === id) addMessage(event.message);
  });
  ctx.listen('conversation', (event) => {
    if (event.conversation && event.conversation.id === id) {
      conversation = { ...conversation, ...event.conversation };
      drawAll();
    }
  });

  replace(ctx.main,
    h('p.crumbs', h('a', { href: '#/conversations' }, 'Conversations'), ' / ', when(conversation.started_at)),
    h('h1', 'Conversation'),
    summary,
    section('Transcript', transcript),
    section('Live takeover', errors.el, controls, replyBox));
  for (const message of initialMessages) addMessage(message);
  drawAll();
}
