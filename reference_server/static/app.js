// Entry point: read the configuration, create the store, mount the UI, start connecting.

import config from '/config.js';
import { createStore, resolveSettings } from './store.js';
import { installTestHooks } from './testhooks.js';
import * as auth from './ui/auth.js';
import * as channels from './ui/channels.js';
import * as connection from './ui/connection.js';
import * as diagnostics from './ui/diagnostics.js';
import * as messages from './ui/messages.js';
import * as threads from './ui/threads.js';

const settings = resolveSettings(config, window.location.href, window.sessionStorage);
const store = createStore(settings);
const root = document.body;

const renders = [connection, auth, channels, messages, threads, diagnostics].map((ui) => ui.mount(root, store));
store.subscribeToChanges((state) => renders.forEach((render) => render(state)));

window.addEventListener('error', (event) => {
  store.reportClientError(`Uncaught error: ${event.message}`, { source: event.filename ?? null, line: event.lineno ?? null });
});
window.addEventListener('unhandledrejection', (event) => {
  store.reportClientError(`Unhandled promise rejection: ${event.reason?.message ?? String(event.reason)}`, {});
});

if (settings.testMode) {
  installTestHooks(store);
  document.documentElement.dataset.testMode = 'true';
}
byTestIdText('protocol-version', `protocol ${settings.protocolVersion}`);
byTestIdText('mode', settings.testMode ? 'test mode' : '');

store.start();
document.documentElement.dataset.ready = 'true';

function byTestIdText(id, text) {
  const el = document.querySelector(`[data-testid="${id}"]`);
  if (el) { el.textContent = text; el.hidden = !text; }
}
