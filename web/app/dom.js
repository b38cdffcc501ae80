// DOM helpers. Everything the dashboard shows is built with createElement and
// textContent: no HTML string is ever parsed, so nothing from the API can run.

/**
 * h('button.primary', { type: 'submit', onclick }, 'Save', child, ...)
 * Attributes: `on*` functions become listeners, `class`/`dataset`/boolean
 * properties are set as properties; the rest with setAttribute. Children:
 * strings become text nodes, null/false are skipped, arrays are flattened.
 */
export function h(tag, attrs, ...children) {
  const [name, ...classes] = tag.split('.');
  const el = document.createElement(name || 'div');
  if (classes.length) el.className = classes.join(' ');
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = [el.className, value].filter(Boolean).join(' ');
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'value' || key === 'checked' || key === 'disabled' || key === 'selected' || key === 'hidden') el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replaces every child of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A local, readable time for an RFC 3339 string (or '' for none). */
export function when(value) {
  if (!value) return '';
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

/** A table: columns [{ title, cell(row) -> node|string }]. */
export function table(columns, rows, { empty = 'Nothing here yet.', rowAttrs } = {}) {
  if (!rows.length) return h('p.empty', empty);
  return h(
    'table',
    h('thead', h('tr', columns.map((c) => h('th', { scope: 'col' }, c.title)))),
    h('tbody', rows.map((row) => h('tr', rowAttrs ? rowAttrs(row) : null, columns.map((c) => h('td', c.cell(row)))))),
  );
}

/** A labelled form field; `input` is the control element. */
export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 10)}`;
  input.id = id;
  return h('div.field', h('label', { for: id }, label), input, hint ? h('small.hint', hint) : null);
}

/** Lines of a textarea as a trimmed list without blanks. */
export function lines(text) {
  return String(text || '')
    .split('\n')
    .map((line) => line.trim())
    .filter(Boolean);
}
