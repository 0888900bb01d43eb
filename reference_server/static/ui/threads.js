// Chat threads card: list (GET /api/chat/threads), create, open one and follow it live.

import { byTestId, h, memo, timeEl } from './dom.js';
import { messageItem } from './messages.js';

export function mount(root, store) {
  const refresh = byTestId(root, 'threads-refresh-button');
  const createForm = byTestId(root, 'thread-create-form');
  const titleInput = byTestId(root, 'thread-title-input');
  const list = byTestId(root, 'thread-list');
  const note = byTestId(root, 'threads-note');
  const view = byTestId(root, 'thread-view');
  const title = byTestId(root, 'thread-title');
  const channelLabel = byTestId(root, 'thread-channel');
  const messages = byTestId(root, 'thread-messages');
  const postForm = byTestId(root, 'thread-post-form');
  const postInput = byTestId(root, 'thread-message-input');
  const closeButton = byTestId(root, 'thread-close-button');

  refresh.addEventListener('click', () => store.refreshThreads());
  createForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const value = titleInput.value;
    titleInput.value = '';
    await store.createThread(value);
  });
  postForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const { threads } = store.getState();
    const thread = threads.items.find((t) => t.id === threads.openId);
    if (!thread) return;
    if (store.publish(thread.channel ?? `thread:${thread.id}`, postInput.value) !== null) postInput.value = '';
  });
  closeButton.addEventListener('click', () => store.closeThread());

  const renders = [
    memo((s) => [s.threads, s.authStatus], ([threads, auth]) => {
      if (threads.error) {
        note.textContent = threads.error;
        note.className = 'note error';
      } else if (threads.loading) {
        note.textContent = 'Loading threads';
        note.className = 'note muted';
      } else if (auth !== 'authenticated' && threads.items.length === 0) {
        note.textContent = 'Authenticate to load chat threads.';
        note.className = 'note muted';
      } else if (threads.items.length === 0) {
        note.textContent = 'No threads yet: start one above.';
        note.className = 'note muted';
      } else {
        note.textContent = '';
        note.className = 'note';
      }
      list.replaceChildren(...threads.items.map((t) => h('li', {
        class: `thread-item${t.id === threads.openId ? ' open' : ''}`, testid: 'thread-item', dataset: { threadId: t.id },
      },
      h('button', {
        type: 'button', class: 'thread-open', testid: 'thread-open-button',
        'aria-current': t.id === threads.openId ? 'true' : null,
        onclick: () => store.openThread(t.id),
      },
      h('span', { class: 'thread-name' }, t.title ?? t.id),
      h('span', { class: 'muted thread-meta' }, t.created_by ? `by ${t.created_by} · ` : '', t.created_at ? timeEl(t.created_at) : '')))));
    }),
    memo((s) => {
      const t = s.threads.items.find((x) => x.id === s.threads.openId) ?? (s.threads.openId ? { id: s.threads.openId } : null);
      if (!t) return null;
      const channel = t.channel ?? `thread:${t.id}`;
      return {
        thread: t, channel, sub: s.subscriptions[channel] ?? null, clientId: s.clientId,
        messages: s.messages.filter((m) => m.channel === channel).sort((a, b) => (a.seq ?? Infinity) - (b.seq ?? Infinity)),
      };
    }, (open) => {
      view.hidden = open === null;
      if (open === null) return;
      title.textContent = open.thread.title ?? open.thread.id;
      channelLabel.textContent = `#${open.channel}${open.sub ? ` · ${open.sub.state}` : ''}`;
      messages.replaceChildren(...(open.messages.length
        ? open.messages.map((m) => messageItem(m, open.clientId, 'thread-message', { showChannel: false }))
        : [h('li', { class: 'muted empty' }, 'No messages yet.')]));
      messages.scrollTop = messages.scrollHeight;
    }),
  ];
  return (state) => renders.forEach((r) => r(state));
}
