// Connection card and the header badge: status, URL, client id and metadata, reconnection info.

import { byTestId, h, memo, timeEl } from './dom.js';

export function mount(root, store) {
  const status = byTestId(root, 'connection-status');
  const detail = byTestId(root, 'connection-detail');
  const wsUrl = byTestId(root, 'ws-url');
  const clientId = byTestId(root, 'client-id');
  const metadata = byTestId(root, 'client-metadata');
  const attempts = byTestId(root, 'reconnect-attempts');
  const lastReconnect = byTestId(root, 'last-reconnect');
  const next = byTestId(root, 'next-reconnect');
  const policy = byTestId(root, 'reconnect-policy');
  const reconnectButton = byTestId(root, 'reconnect-button');
  const disconnectButton = byTestId(root, 'disconnect-button');

  reconnectButton.addEventListener('click', () => store.reconnect());
  disconnectButton.addEventListener('click', () => store.disconnect());

  const renders = [
    memo((s) => [s.status, s.statusDetail], ([st, text]) => {
      status.textContent = st;
      status.dataset.status = st;
      document.documentElement.dataset.status = st;
      detail.textContent = text;
      reconnectButton.classList.toggle('primary', st === 'error' || st === 'disconnected');
      reconnectButton.classList.toggle('secondary', !(st === 'error' || st === 'disconnected'));
    }),
    memo((s) => [s.wsUrl, s.clientId], ([url, id]) => {
      wsUrl.textContent = url;
      clientId.textContent = id;
    }),
    memo((s) => s.clientMetadata, (m) => {
      metadata.replaceChildren(
        h('span', { class: 'chip', dataset: { field: 'type' } }, m.type),
        h('span', { class: 'meta-perms', dataset: { field: 'permissions' } },
          m.permissions.length ? m.permissions.join(', ') : 'no permissions yet'),
        h('span', { class: 'muted meta-created', dataset: { field: 'created' } }, 'since ', timeEl(m.created)),
      );
    }),
    memo((s) => [s.reconnectAttempts, s.lastReconnect], ([n, last]) => {
      attempts.textContent = `Reconnection attempts: ${n}`;
      lastReconnect.replaceChildren('Last reconnection: ', last ? timeEl(last) : 'Never');
    }),
    memo((s) => [s.nextReconnectDelay, s.nextReconnectAt, s.autoReconnect, s.status], ([delay, at, auto]) => {
      next.dataset.delayMs = delay ?? '';
      if (delay !== null) {
        next.replaceChildren(`Next reconnect in ${delay} ms (at `, timeEl(new Date(at).toISOString()), ')');
      } else if (!auto) {
        next.textContent = 'Automatic reconnection is off: use Reconnect or Authenticate';
      } else {
        next.textContent = 'No reconnect scheduled';
      }
    }),
    memo((s) => s.backoff, (b) => {
      policy.textContent = `Backoff min(${b.baseMs} ms × 2^n, ${b.capMs} ms), jitter ${b.jitter}${b.seeded ? ', seeded' : ''}`;
    }),
  ];
  return (state) => renders.forEach((r) => r(state));
}
