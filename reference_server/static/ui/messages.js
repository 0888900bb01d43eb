// Messages card: publish form, offline queue size and the message log.

import { byTestId, h, memo, timeEl } from './dom.js';

/** One message as a list item; shared with the chat thread view. */
export function messageItem(m, clientId, testid = 'message-item', { showChannel = true } = {}) {
  const badgeText = m.own ? m.state : 'received';
  return h('li', {
    class: `msg ${m.own ? 'own' : 'theirs'} state-${m.state}`, testid,
    dataset: { messageId: m.messageId, channel: m.channel, state: m.state, seq: m.seq ?? '', queued: m.queued ? 'true' : 'false' },
  },
  h('div', { class: 'msg-head' },
    showChannel ? h('span', { class: 'msg-channel' }, `#${m.channel}`) : null,
    h('span', { class: 'msg-sender' }, m.sender === clientId ? 'you' : m.sender),
    m.seq !== null && m.seq !== undefined ? h('span', { class: 'msg-seq', title: 'Sequence number in the channel' }, `seq ${m.seq}`) : null,
    timeEl(m.time),
    h('span', { class: `badge state-${m.state}`, testid: 'message-state' }, badgeText),
    m.queued ? h('span', { class: 'muted msg-queued' }, 'queued offline') : null),
  h('p', { class: 'msg-content', testid: 'message-content' }, m.content),
  m.error ? h('p', { class: 'msg-error', testid: 'message-error' }, m.error) : null);
}

export function mount(root, store) {
  const form = byTestId(root, 'publish-form');
  const channel = byTestId(root, 'publish-channel');
  const input = byTestId(root, 'message-input');
  const log = byTestId(root, 'message-log');
  const empty = byTestId(root, 'message-empty');
  const queue = byTestId(root, 'offline-queue');
  // "To channel" follows whichever channel field was edited last: typing in the
  // Channels card's input (or subscribing) retargets the composer.
  const channelInput = byTestId(root, 'channel-input');
  channelInput.addEventListener('input', () => {
    if (channelInput.value.trim()) channel.value = channelInput.value.trim();
  });
  root.addEventListener('nova:subscribed', (event) => { channel.value = event.detail; });
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const target = channel.value.trim() || store.settings.defaultChannel;
    if (store.publish(target, input.value) !== null) {
      input.value = '';
    }
  });
  if (!channel.value) channel.value = store.settings.defaultChannel;

  const renders = [
    memo((s) => [s.messages.filter((m) => !m.channel.startsWith('thread:')), s.clientId], ([messages, clientId]) => {
      empty.hidden = messages.length > 0;
      const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
      log.replaceChildren(...messages.map((m) => messageItem(m, clientId)));
      if (atBottom) log.scrollTop = log.scrollHeight;
    }),
    memo((s) => s.offlineQueue.length, (n) => {
      queue.textContent = n ? `${n} message${n === 1 ? '' : 's'} queued until reconnected` : '';
      queue.hidden = n === 0;
    }),
  ];
  return (state) => renders.forEach((r) => r(state));
}
