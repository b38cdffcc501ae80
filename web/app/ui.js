// Shared pieces of the pages: error banners, busy buttons, dialogs, toasts.

import { h, replace } from './dom.js';

/** The error banner of a page section: the server's message, its code beside it. */
export function errorBox() {
  const box = h('div.error', { role: 'alert', hidden: true });
  return {
    el: box,
    show(error) {
      const message = error && error.message ? error.message : String(error);
      replace(box, h('strong', 'Error: '), message, error && error.code ? h('span.code', ` (${error.code})`) : null);
      box.hidden = false;
    },
    clear() {
      box.hidden = true;
      box.replaceChildren();
    },
  };
}

/**
 * Runs `action` with `button` disabled; shows a thrown error in `errors`.
 * Returns the action's result, or undefined when it failed.
 */
export async function busy(button, errors, action) {
  if (errors) errors.clear();
  const wasDisabled = button ? button.disabled : false;
  if (button) button.disabled = true;
  try {
    return await action();
  } catch (error) {
    if (error.name === 'AbortError') return undefined;
    if (errors) errors.show(error);
    else toast(error.message, 'error');
    return undefined;
  } finally {
    if (button && button.isConnected) button.disabled = wasDisabled;
  }
}

/** A modal dialog; resolves with true (confirmed) or false. */
export function confirmDialog(question, { confirm = 'Delete', danger = true } = {}) {
  return new Promise((resolve) => {
    const dialog = h(
      'dialog.confirm',
      h('form', { method: 'dialog' },
        h('p', question),
        h('div.actions',
          h('button', { value: 'cancel', type: 'submit' }, 'Cancel'),
          h(danger ? 'button.danger' : 'button.primary', { value: 'ok', type: 'submit' }, confirm))),
    );
    dialog.addEventListener('close', () => {
      resolve(dialog.returnValue === 'ok');
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/**
 * Shows a secret the server reveals once (a webhook signing secret, an API
 * token). Closing the dialog removes it from the page: it is not kept anywhere.
 */
export function secretDialog(title, secret, note) {
  return new Promise((resolve) => {
    const value = h('code.secret-value', secret);
    const copied = h('span.copied', { role: 'status' });
    const dialog = h(
      'dialog.secret',
      { 'aria-labelledby': 'secret-title' },
      h('h2', { id: 'secret-title' }, title),
      h('p', note || 'Copy it now: it is shown this once and cannot be shown again.'),
      h('div.secret-box', value),
      h('form', { method: 'dialog' },
        h('div.actions',
          h('button', { type: 'button', onclick: () => copyText(secret, copied) }, 'Copy'),
          copied,
          h('button.primary', { type: 'submit', value: 'done' }, 'Done, I saved it'))),
    );
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** Copies text to the clipboard and says so in `status`. */
export async function copyText(text, status) {
  try {
    await navigator.clipboard.writeText(text);
    if (status) status.textContent = 'Copied';
  } catch {
    if (status) status.textContent = 'Copy failed: select the text and copy it by hand';
  }
  if (status) setTimeout(() => { if (status.isConnected) status.textContent = ''; }, 4000);
}

/** A short notice in the corner; `link` is { href, text }. */
export function toast(message, kind = 'info', link) {
  const region = document.getElementById('toasts');
  const item = h(`div.toast.${kind}`, { role: kind === 'error' ? 'alert' : 'status' },
    h('span', message),
    link ? h('a', { href: link.href }, link.text) : null,
    h('button.dismiss', { type: 'button', 'aria-label': 'Dismiss', onclick: () => item.remove() }, '×'));
  region.append(item);
  // A waiting visitor's notice stays until someone acts on it (the badge stays too).
  if (kind !== 'waiting') setTimeout(() => item.remove(), kind === 'error' ? 15_000 : 30_000);
  return item;
}

/** A section of a page: heading, optional actions, body. */
export function section(title, ...body) {
  return h('section.card', h('h2', title), ...body);
}
