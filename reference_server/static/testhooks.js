// Test hooks, installed only when the server runs in test mode (config.testMode).
//
//   window.dispatchEvent(new CustomEvent('websocket-message', {detail: <protocol message>}))
//       handles the message exactly as if it had arrived on the socket (detail may be
//       an object or a JSON string);
//   window.dispatchEvent(new CustomEvent('websocket-status', {detail: {status, error?}}))
//       sets the store's status as the seed's setConnectionStatus did;
//   window.__novaWs: getState(), seed(n), random(), settings and the store's actions.

export function installTestHooks(store) {
  window.addEventListener('websocket-message', (event) => {
    store.injectMessage(event.detail);
  });
  window.addEventListener('websocket-status', (event) => {
    const detail = event.detail ?? {};
    store.setConnectionStatus(detail.status, detail.error ?? null);
  });
  window.__novaWs = Object.freeze({
    getState: () => store.getState(),
    seed: (n) => store.seed(n),
    random: () => store.random(),
    settings: store.settings,
    connect: () => store.connect(),
    reconnect: () => store.reconnect(),
    disconnect: () => store.disconnect(),
    authenticate: (key) => store.authenticate(key),
    subscribe: (channel) => store.subscribe(channel),
    unsubscribe: (channel) => store.unsubscribe(channel),
    publish: (channel, content) => store.publish(channel, content),
  });
}
