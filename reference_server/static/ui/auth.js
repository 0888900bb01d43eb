// Authentication card: the API key form and the auth status line.

import { byTestId, memo } from './dom.js';

export const AUTH_TEXT = Object.freeze({
  idle: 'Not authenticated',
  authenticating: 'Authenticating',
  authenticated: 'Authenticated',
});

export function authText(state) {
  if (state.authStatus === 'failed') return `Authentication failed: ${state.authError ?? 'unknown reason'}`;
  return AUTH_TEXT[state.authStatus] ?? state.authStatus;
}

export function mount(root, store) {
  const form = byTestId(root, 'auth-form');
  const input = byTestId(root, 'api-key-input');
  const status = byTestId(root, 'auth-status');
  const perms = byTestId(root, 'auth-permissions');

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    store.authenticate(input.value);
  });

  const renders = [
    memo((s) => [s.authStatus, s.authError], () => {
      const s = store.getState();
      status.textContent = authText(s);
      status.dataset.auth = s.authStatus;
    }),
    memo((s) => [s.authStatus, s.clientMetadata.permissions], ([auth, permissions]) => {
      perms.textContent = auth === 'authenticated'
        ? `Permissions: ${permissions.length ? permissions.join(', ') : 'none'}`
        : 'Keys: development (read, write, admin) or valid-test-key (read, write) by default';
    }),
  ];
  return (state) => renders.forEach((r) => r(state));
}
