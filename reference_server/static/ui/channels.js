// Channels card: subscribe form, the subscription list and known channels (datalist).

import { byTestId, h, memo } from './dom.js';

const STATE_TEXT = { pending: 'pending', subscribed: 'subscribed', unsubscribing: 'leaving', failed: 'failed' };

export function mount(root, store) {
  const form = byTestId(root, 'subscribe-form');
  const input = byTestId(root, 'channel-input');
  const list = byTestId(root, 'channel-list');
  const empty = byTestId(root, 'channel-empty');
  const options = root.querySelector('#channel-options');

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (store.subscribe(input.value)) {
      root.dispatchEvent(new CustomEvent('nova:subscribed', { detail: input.value.trim() }));
    }
  });

  const renders = [
    memo((s) => Object.values(s.subscriptions), (subs) => {
      empty.hidden = subs.length > 0;
      list.replaceChildren(...subs.map((sub) => h('li', {
        class: 'channel-item', testid: 'channel-item',
        dataset: { channel: sub.channel, state: sub.state, lastSeq: sub.lastSeq ?? '' },
      },
      h('div', { class: 'channel-row' },
        h('span', { class: 'channel-name', title: sub.channel }, `#${sub.channel}`),
        h('span', { class: `badge state-${sub.state}`, testid: 'channel-state' }, STATE_TEXT[sub.state] ?? sub.state),
        h('span', { class: 'muted channel-seq', title: 'Last sequence number seen' },
          sub.lastSeq === null || sub.lastSeq === undefined ? 'seq –' : `seq ${sub.lastSeq}`),
        h('button', {
          type: 'button', class: 'link', testid: 'unsubscribe-button',
          'aria-label': `Unsubscribe from ${sub.channel}`,
          onclick: () => store.unsubscribe(sub.channel),
        }, 'Leave')),
      sub.error ? h('p', { class: 'channel-error', testid: 'channel-error' }, sub.error) : null)));
    }),
    memo((s) => s.channels.map((c) => c.name), (names) => {
      options.replaceChildren(...names.map((n) => h('option', { value: n })));
    }),
  ];
  return (state) => renders.forEach((r) => r(state));
}
