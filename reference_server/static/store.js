// The single state store of the Nova reference client, and all its connection logic.
//
// UI modules only render `store.getState()` and call the actions below; nothing else
// touches the WebSocket.  The state machine is documented in docs/ui-contract.md.
//
// Time: every timer is setTimeout/setInterval and every timestamp comes from Date, so
// Playwright's clock (page.clock.install / run_for / fast_forward) controls backoff,
// heartbeat and operation timeouts.  Randomness: jitter draws from ONE function,
// `random()`, seeded through config/`?seed=` or `window.__novaWs.seed(n)`.

export const STATUSES = Object.freeze(['disconnected', 'connecting', 'connected', 'error']);
export const JITTER_MODES = Object.freeze(['none', 'full', 'equal']);

/** Close codes after which the client does not reconnect on its own. */
export const NO_RECONNECT_CODES = Object.freeze([4001, 4002, 4003, 1008]);

export const CLOSE_CODE_TEXT = Object.freeze({
  1000: 'Normal closure',
  1001: 'Server going away',
  1006: 'Connection lost',
  1008: 'Policy violation',
  1009: 'Message too big',
  1011: 'Server internal error',
  4001: 'Authentication failed',
  4002: 'Authentication timed out',
  4003: 'Replaced by a newer connection with the same client id',
});

const CLIENT_ID_KEY = 'nova-ws.client-id';
const ERROR_LIST_LIMIT = 20;
const CLIENT_ERROR_QUEUE_LIMIT = 20;
const SEEN_IDS_LIMIT = 5000;

// ------------------------------------------------------------------ pure helpers

/**
 * A random source: mulberry32 when seeded (replayable), Math.random otherwise.
 * `seed(n)` restarts the sequence; `seed(null)` goes back to Math.random.
 */
export function createRandom(seed = null) {
  let state = null;
  const source = {
    seed(n) {
      state = n === null || n === undefined || Number.isNaN(Number(n)) ? null : Number(n) >>> 0;
      source.seeded = state !== null;
      return source;
    },
    next() {
      if (state === null) return Math.random();
      state = (state + 0x6d2b79f5) >>> 0;
      let t = state;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    },
    seeded: false,
  };
  return source.seed(seed);
}

/**
 * The delay before reconnection attempt number `attempt + 1`:
 * `min(base * 2^attempt, cap)`, then jitter: none (that), full (uniform in [0, that]),
 * equal (that/2 + uniform in [0, that/2]).  Integer milliseconds.
 */
export function backoffDelay(attempt, { baseMs = 1000, capMs = 30000, jitter = 'full' } = {}, random = Math.random) {
  const ceiling = Math.min(baseMs * 2 ** Math.max(0, attempt), capMs);
  switch (jitter) {
    case 'none':
      return Math.round(ceiling);
    case 'equal':
      return Math.round(ceiling / 2 + random() * (ceiling / 2));
    case 'full':
      return Math.round(random() * ceiling);
    default:
      throw new Error(`unknown jitter ${JSON.stringify(jitter)}; expected one of ${JITTER_MODES.join(', ')}`);
  }
}

function randomHex(bytes) {
  const buf = new Uint8Array(bytes);
  crypto.getRandomValues(buf); // works outside secure contexts, unlike crypto.randomUUID
  return Array.from(buf, (b) => b.toString(16).padStart(2, '0')).join('');
}

export function newId() {
  return randomHex(16);
}

function intParam(params, name, fallback, problems) {
  const raw = params.get(name);
  if (raw === null || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) {
    problems.push(`?${name}=${raw} ignored: expected a non-negative integer`);
    return fallback;
  }
  return value;
}

/**
 * Everything the store needs to know, from the server's config and the page URL.
 * Query parameters: ws, api, client_id, jitter, seed, backoff_base, backoff_cap,
 * op_timeout, heartbeat_interval, heartbeat_timeout, open_timeout (all ms).
 */
export function resolveSettings(config, pageUrl, storage = null) {
  const url = new URL(pageUrl);
  const params = url.searchParams;
  const problems = [];
  const idPattern = new RegExp(config.clientIdPattern ?? '^[A-Za-z0-9_-]{1,64}$');

  let clientId = null;
  const fixed = params.get('client_id');
  if (fixed !== null) {
    if (idPattern.test(fixed)) clientId = fixed;
    else problems.push(`?client_id=${fixed} ignored: a client id must match ${idPattern.source}`);
  }
  if (clientId === null && storage) {
    try {
      const kept = storage.getItem(CLIENT_ID_KEY);
      if (kept && idPattern.test(kept)) clientId = kept;
    } catch { /* storage disabled: one id per page load */ }
  }
  if (clientId === null) {
    clientId = `tab-${randomHex(6)}`;
  }
  if (fixed === null && storage) {
    try { storage.setItem(CLIENT_ID_KEY, clientId); } catch { /* see above */ }
  }

  let jitter = config.jitter ?? 'full';
  const jitterParam = params.get('jitter');
  if (jitterParam !== null) {
    if (JITTER_MODES.includes(jitterParam)) jitter = jitterParam;
    else problems.push(`?jitter=${jitterParam} ignored: expected one of ${JITTER_MODES.join(', ')}`);
  }
  // Seed precedence: ?seed= > window.__NOVA_WS_SEED (an init script, as the harness does) > config.
  let seed = config.seed ?? null;
  if (Number.isInteger(globalThis.__NOVA_WS_SEED)) seed = globalThis.__NOVA_WS_SEED;
  const seedParam = params.get('seed');
  if (seedParam !== null && seedParam !== '') {
    if (Number.isInteger(Number(seedParam))) seed = Number(seedParam);
    else problems.push(`?seed=${seedParam} ignored: expected an integer`);
  }

  const wsPath = config.wsPath ?? '/debug/{client_id}';
  const encodedId = encodeURIComponent(clientId);
  const wsScheme = url.protocol === 'https:' ? 'wss:' : 'ws:';
  let wsUrl;
  let apiBase;
  const wsParam = params.get('ws');
  if (wsParam) {
    let candidate = wsParam.replace(/^http(s?):/i, 'ws$1:');
    if (candidate.includes('{client_id}')) {
      wsUrl = candidate.replaceAll('{client_id}', encodedId);
    } else {
      const parsed = new URL(candidate, url);
      wsUrl = parsed.pathname === '/' && !candidate.endsWith('/?')
        ? `${parsed.protocol}//${parsed.host}${wsPath.replaceAll('{client_id}', encodedId)}`
        : parsed.href;
    }
    const parsedWs = new URL(wsUrl);
    apiBase = `${parsedWs.protocol === 'wss:' ? 'https:' : 'http:'}//${parsedWs.host}`;
  } else {
    const host = config.apiPort ? `${url.hostname}:${config.apiPort}` : url.host;
    wsUrl = `${wsScheme}//${host}${wsPath.replaceAll('{client_id}', encodedId)}`;
    apiBase = config.apiPort ? `${url.protocol}//${host}` : '';
  }
  const apiParam = params.get('api');
  if (apiParam) apiBase = apiParam.replace(/\/+$/, '');

  return {
    clientId,
    wsUrl,
    apiBase,
    testMode: Boolean(config.testMode),
    jitter,
    seed,
    backoffBaseMs: intParam(params, 'backoff_base', config.backoffBaseMs ?? 1000, problems),
    backoffCapMs: intParam(params, 'backoff_cap', config.backoffCapMs ?? 30000, problems),
    operationTimeoutMs: intParam(params, 'op_timeout', config.operationTimeoutMs ?? 5000, problems),
    heartbeatIntervalMs: intParam(params, 'heartbeat_interval', config.heartbeatIntervalMs ?? 25000, problems),
    heartbeatTimeoutMs: intParam(params, 'heartbeat_timeout', config.heartbeatTimeoutMs ?? 10000, problems),
    openTimeoutMs: intParam(params, 'open_timeout', config.openTimeoutMs ?? 10000, problems),
    offlineQueueLimit: config.offlineQueueLimit ?? 100,
    statusHistoryLimit: config.statusHistoryLimit ?? 50,
    messageLogLimit: config.messageLogLimit ?? 500,
    clientType: config.clientType ?? 'browser',
    channelPattern: config.channelPattern ?? '^[a-z0-9][a-z0-9_-]{0,63}(:[A-Za-z0-9_-]{1,64})?$',
    defaultChannel: config.defaultChannel ?? 'general',
    protocolVersion: config.protocolVersion ?? '1.0',
    problems,
  };
}

// ------------------------------------------------------------------ the store

/**
 * Create the store.  `deps` replaces globals for tests: {WebSocket, fetch}.
 * Nothing happens until `start()`.
 */
export function createStore(settings, deps = {}) {
  const WS = deps.WebSocket ?? globalThis.WebSocket;
  const fetchFn = deps.fetch ?? globalThis.fetch.bind(globalThis);
  const random = createRandom(settings.seed);
  const channelRe = new RegExp(settings.channelPattern);

  const state = {
    status: 'disconnected',
    connected: false,
    connecting: false,
    statusDetail: 'Not started',
    statusSource: 'transport', // 'test-event' after a websocket-status event, until a user action
    wsUrl: settings.wsUrl,
    apiBase: settings.apiBase,
    testMode: settings.testMode,
    clientId: settings.clientId,
    clientMetadata: { type: settings.clientType, permissions: [], created: new Date().toISOString() },
    server: null, // {protocolVersion, authTimeoutMs, serverTime} from connection_established
    channels: [], // [{name, last_seq}] from GET /api/channels
    subscriptions: {}, // channel -> {channel, state: pending|subscribed|unsubscribing|failed, lastSeq, error}
    lastError: null,
    errors: [], // newest first: {time, source, code, message, details}
    reconnectAttempts: 0,
    lastReconnect: null,
    nextReconnectDelay: null,
    nextReconnectAt: null, // epoch ms (Date.now() based, so Playwright's clock moves it)
    autoReconnect: true,
    statusHistory: [],
    authStatus: 'idle', // idle | authenticating | authenticated | failed
    authError: null,
    pendingOperations: [], // {id, type, channel, sentAt, timeoutMs}
    offlineQueue: [], // message ids waiting to be sent
    messages: [], // {messageId, channel, sender, content, seq, time, state, own, queued, error}
    threads: { items: [], loading: false, error: null, openId: null },
    heartbeat: { lastPingAt: null, lastFrameAt: null, awaitingReply: false, intervalMs: settings.heartbeatIntervalMs, timeoutMs: settings.heartbeatTimeoutMs },
    backoff: { baseMs: settings.backoffBaseMs, capMs: settings.backoffCapMs, jitter: settings.jitter, seeded: random.seeded },
    operationTimeoutMs: settings.operationTimeoutMs,
  };

  // Connection internals (not rendered).
  let ws = null;
  let established = false;
  let lastAcceptedKey = null;
  let pendingKey = null;
  let manualClose = false;
  let reconnectTimer = null;
  let openTimer = null;
  let heartbeatTimer = null;
  let deadTimer = null;
  const ops = new Map(); // id -> {id, type, channel, messageId, key, timer, sentAt, timeoutMs}
  const seenMessageIds = new Set();
  const clientErrorQueue = [];
  const listeners = new Set();
  let notifyQueued = false;

  // -------------------------------------------------------------- plumbing

  function notify() {
    if (notifyQueued) return;
    notifyQueued = true;
    queueMicrotask(() => {
      notifyQueued = false;
      for (const fn of listeners) {
        try { fn(state); } catch (err) { console.error('render failed', err); }
      }
    });
  }

  function nowIso() {
    return new Date().toISOString();
  }

  function setStatus(status, detail = '', { fromTestEvent = false } = {}) {
    if (!STATUSES.includes(status)) {
      throw new Error(`unknown status ${JSON.stringify(status)}; expected one of ${STATUSES.join(', ')}`);
    }
    // While a `websocket-status` test event drives the status, the transport's own
    // transitions do not overwrite it (a socket opening late would otherwise race the
    // test).  A user action (Authenticate, Reconnect, Disconnect) hands it back.
    if (state.statusSource === 'test-event' && !fromTestEvent) return;
    state.status = status;
    state.connected = status === 'connected';
    state.connecting = status === 'connecting';
    state.statusDetail = detail;
    const last = state.statusHistory[state.statusHistory.length - 1];
    if (!last || last.status !== status || last.detail !== detail) {
      state.statusHistory.push({ status, time: nowIso(), detail });
      if (state.statusHistory.length > settings.statusHistoryLimit) {
        state.statusHistory.splice(0, state.statusHistory.length - settings.statusHistoryLimit);
      }
    }
    notify();
  }

  function recordError(source, message, { code = null, details = null, setLast = true } = {}) {
    state.errors.unshift({ time: nowIso(), source, code, message, details });
    if (state.errors.length > ERROR_LIST_LIMIT) state.errors.length = ERROR_LIST_LIMIT;
    if (setLast) state.lastError = message;
    notify();
  }

  function envelope(type, data, id) {
    const frame = { type, data, timestamp: nowIso(), client_id: state.clientId };
    if (id !== undefined && id !== null) frame.id = id;
    return frame;
  }

  function socketOpen() {
    return ws !== null && ws.readyState === WS.OPEN;
  }

  function ready() {
    return socketOpen() && state.authStatus === 'authenticated';
  }

  /** Send a frame; return its size in bytes (UTF-8), or 0 when there is no open socket. */
  function send(frame) {
    if (!socketOpen()) return 0;
    const text = JSON.stringify(frame);
    ws.send(text);
    return new TextEncoder().encode(text).length;
  }

  function syncOps() {
    state.pendingOperations = [...ops.values()].map(({ id, type, channel, sentAt, timeoutMs }) => ({
      id, type, channel: channel ?? null, sentAt, timeoutMs,
    }));
    notify();
  }

  function startOp(type, id, extra = {}) {
    const timeoutMs = settings.operationTimeoutMs;
    const op = { id, type, sentAt: nowIso(), timeoutMs, ...extra };
    op.timer = timeoutMs > 0 ? setTimeout(() => timeoutOp(id), timeoutMs) : null;
    ops.set(id, op);
    syncOps();
    return op;
  }

  function finishOp(id) {
    const op = ops.get(id);
    if (!op) return null;
    clearTimeout(op.timer);
    ops.delete(id);
    syncOps();
    return op;
  }

  function findOp(predicate) {
    for (const op of ops.values()) if (predicate(op)) return op;
    return null;
  }

  function messageById(messageId) {
    return state.messages.find((m) => m.messageId === messageId) ?? null;
  }

  function timeoutOp(id) {
    const op = finishOp(id);
    if (!op) return;
    const text = `Operation ${op.type} timed out after ${op.timeoutMs} ms`;
    recordError('timeout', text, { code: 'timeout', details: { operation_id: id, type: op.type, channel: op.channel ?? null } });
    failOpEffects(op, text);
    reportClientError(text, { operation_id: id, operation: op.type, channel: op.channel ?? null });
  }

  function failOpEffects(op, reason) {
    if (op.type === 'connect') {
      if (pendingKey === op.key) pendingKey = null;
      state.authStatus = 'failed';
      state.authError = reason;
    } else if (op.type === 'subscribe' || op.type === 'unsubscribe') {
      const sub = state.subscriptions[op.channel];
      if (sub) { sub.state = 'failed'; sub.error = reason; }
    } else if (op.type === 'publish') {
      const item = messageById(op.messageId);
      if (item && item.state !== 'delivered') { item.state = 'failed'; item.error = reason; }
    }
    notify();
  }

  // -------------------------------------------------------------- socket lifecycle

  function clearReconnectTimer() {
    if (reconnectTimer !== null) clearTimeout(reconnectTimer);
    reconnectTimer = null;
    state.nextReconnectDelay = null;
    state.nextReconnectAt = null;
  }

  function stopHeartbeat() {
    state.heartbeat.awaitingReply = false;
    if (heartbeatTimer !== null) clearInterval(heartbeatTimer);
    if (deadTimer !== null) clearTimeout(deadTimer);
    heartbeatTimer = null;
    deadTimer = null;
  }

  /** Forget the current socket without waiting for its close event. */
  function dropSocket(code = 1000, reason = '') {
    if (openTimer !== null) clearTimeout(openTimer);
    openTimer = null;
    stopHeartbeat();
    if (ws === null) return;
    const old = ws;
    ws = null;
    old.onopen = old.onmessage = old.onerror = old.onclose = null;
    try { old.close(code, reason); } catch { /* already closed */ }
  }

  function connect(detail = 'Opening WebSocket') {
    if (ws !== null) return;
    clearReconnectTimer();
    manualClose = false;
    established = false;
    state.server = null;
    let socket;
    try {
      socket = new WS(state.wsUrl);
    } catch (err) {
      state.autoReconnect = false;
      recordError('client', `Cannot open ${state.wsUrl}: ${err.message}`);
      setStatus('error', `Invalid WebSocket URL ${state.wsUrl}`);
      return;
    }
    ws = socket;
    setStatus('connecting', `${detail}: ${state.wsUrl}`);
    if (settings.openTimeoutMs > 0) {
      openTimer = setTimeout(() => {
        openTimer = null;
        if (ws !== socket) return;
        dropSocket();
        handleClosed(1006, `Connection not opened within ${settings.openTimeoutMs} ms`);
      }, settings.openTimeoutMs);
    }
    socket.onopen = () => {
      if (ws !== socket) return;
      clearTimeout(openTimer);
      openTimer = null;
      setStatus('connected', 'Socket open; waiting for connection_established');
      if (settings.heartbeatIntervalMs > 0) heartbeatTimer = setInterval(sendPing, settings.heartbeatIntervalMs);
    };
    socket.onmessage = (event) => {
      if (ws === socket) receive(event.data);
    };
    socket.onclose = (event) => {
      if (ws !== socket) return;
      dropSocket();
      handleClosed(event.code, event.reason);
    };
    socket.onerror = () => { /* the close event that follows carries the detail */ };
  }

  function handleClosed(code, reason) {
    established = false;
    state.server = null;
    const wasAuthenticating = state.authStatus === 'authenticating';
    // Operations in flight are void on a dead socket: publishes go back to the queue
    // (resent with the same message id, which the server deduplicates), subscriptions
    // are renewed after re-authentication, the connect is redone with the same key.
    // After 1009 (message too big) the largest publish in flight is the culprit: resending
    // it would loop (reconnect, re-authenticate, 1009, ...), so it fails instead.
    const inFlight = [...ops.values()];
    const tooBig = code === 1009
      ? inFlight.filter((op) => op.type === 'publish').sort((a, b) => (b.bytes ?? 0) - (a.bytes ?? 0))[0] ?? null
      : null;
    const requeue = [];
    for (const op of inFlight) {
      finishOp(op.id);
      if (op.type !== 'publish') continue;
      const item = messageById(op.messageId);
      if (!item || item.state !== 'pending') continue;
      if (op === tooBig) {
        item.state = 'failed';
        item.error = `Message too big: the server closed the connection with 1009 after this ${op.bytes}-byte frame`;
      } else {
        item.queued = true;
        requeue.push(op.messageId);
      }
    }
    state.offlineQueue = [...requeue, ...state.offlineQueue];
    for (const [channel, sub] of Object.entries(state.subscriptions)) {
      if (sub.state === 'unsubscribing') delete state.subscriptions[channel];
      else if (sub.state === 'subscribed') sub.state = 'pending';
    }
    const closeText = CLOSE_CODE_TEXT[code] ?? 'Connection closed';
    const because = reason || closeText;
    if (state.authStatus === 'authenticated') {
      state.authStatus = 'idle';
    } else if (wasAuthenticating && code === 4001) {
      state.authStatus = 'failed';
      state.authError = state.authError ?? because;
      pendingKey = null;
    } else if (wasAuthenticating && !NO_RECONNECT_CODES.includes(code)) {
      // The key will be sent again on the next connection.
    } else if (wasAuthenticating) {
      state.authStatus = 'failed';
      state.authError = because;
      pendingKey = null;
    }

    if (manualClose) {
      setStatus('disconnected', reason || 'Disconnected by the user');
      return;
    }
    if (NO_RECONNECT_CODES.includes(code)) {
      state.autoReconnect = false;
      recordError('close', because, { code, details: { close_code: code, reason } });
      setStatus('error', `Closed with code ${code}: ${because}. Not reconnecting`);
      return;
    }
    const delay = backoffDelay(
      state.reconnectAttempts,
      { baseMs: settings.backoffBaseMs, capMs: settings.backoffCapMs, jitter: settings.jitter },
      random.next,
    );
    state.reconnectAttempts += 1;
    state.lastReconnect = nowIso();
    recordError('close', reason || 'Connection closed', { code, details: { close_code: code, reason } });
    setStatus('disconnected', `Closed with code ${code}: ${because}. Reconnecting in ${delay} ms`);
    scheduleReconnect(delay);
  }

  function scheduleReconnect(delay) {
    clearReconnectTimer();
    state.nextReconnectDelay = delay;
    state.nextReconnectAt = Date.now() + delay;
    reconnectTimer = setTimeout(() => {
      reconnectTimer = null;
      state.nextReconnectDelay = null;
      state.nextReconnectAt = null;
      connect(`Reconnecting (attempt ${state.reconnectAttempts})`);
    }, delay);
    notify();
  }

  function sendPing() {
    // Before authentication the server answers anything but `connect` with an error,
    // and its auth timeout already bounds that phase: ping authenticated sockets only.
    if (!ready()) return;
    send(envelope('ping', {}));
    state.heartbeat.lastPingAt = nowIso();
    state.heartbeat.awaitingReply = true;
    if (deadTimer === null) {
      deadTimer = setTimeout(onHeartbeatTimeout, settings.heartbeatTimeoutMs);
    }
    notify();
  }

  function onHeartbeatTimeout() {
    deadTimer = null;
    if (!socketOpen()) return;
    const text = `No frame within ${settings.heartbeatTimeoutMs} ms after ping: connection is dead`;
    reportClientError(text, { heartbeat_interval_ms: settings.heartbeatIntervalMs });
    dropSocket(4000, 'heartbeat timeout');
    handleClosed(1006, text);
  }

  // -------------------------------------------------------------- receiving

  function receive(raw) {
    state.heartbeat.lastFrameAt = nowIso();
    state.heartbeat.awaitingReply = false;
    if (deadTimer !== null) { clearTimeout(deadTimer); deadTimer = null; }
    let message = raw;
    if (typeof raw === 'string') {
      try {
        message = JSON.parse(raw);
      } catch (err) {
        const text = `Received a frame that is not JSON: ${err.message}`;
        recordError('client', text);
        reportClientError(text, { frame: raw.slice(0, 200) });
        return;
      }
    }
    if (message === null || typeof message !== 'object' || typeof message.type !== 'string') {
      const text = 'Received a frame that is not a Nova envelope (no "type")';
      recordError('client', text);
      reportClientError(text, { frame: JSON.stringify(message)?.slice(0, 200) ?? String(message) });
      return;
    }
    handleMessage(message);
  }

  function handleMessage(msg) {
    const data = msg.data && typeof msg.data === 'object' ? msg.data : {};
    switch (msg.type) {
      case 'connection_established':
        return onEstablished(data);
      case 'auth_success':
        return onAuthSuccess(msg, data);
      case 'error':
        return onServerError(msg, data);
      case 'delivery_confirmation':
        return onDelivered(msg, data);
      case 'subscribed':
        return onSubscribed(msg, data);
      case 'unsubscribed':
        return onUnsubscribed(msg, data);
      case 'channel_message':
        return onChannelMessage(data);
      case 'thread_created':
        return onThreadCreated(data);
      case 'pong':
        return notify();
      default: {
        const text = `Received an unknown message type ${JSON.stringify(msg.type)}`;
        recordError('client', text);
        reportClientError(text, { type: msg.type });
      }
    }
  }

  // A thread made anywhere (REST, another page): listed at once, no refresh needed.
  function onThreadCreated(data) {
    if (!data || typeof data.id !== 'string') return;
    if (!state.threads.items.some((t) => t.id === data.id)) {
      state.threads.items = [...state.threads.items, data];
    }
    notify();
  }

  function onEstablished(data) {
    established = true;
    state.server = {
      protocolVersion: data.protocol_version ?? null,
      authTimeoutMs: data.auth_timeout_ms ?? null,
      serverTime: data.server_time ?? null,
    };
    const key = pendingKey ?? lastAcceptedKey;
    if (key !== null) {
      setStatus('connected', 'Connection established; authenticating');
      sendConnect(key);
    } else {
      setStatus('connected', 'Connection established; waiting for an API key');
    }
  }

  function sendConnect(key) {
    pendingKey = key;
    state.authStatus = 'authenticating';
    state.authError = null;
    const id = newId();
    startOp('connect', id, { key });
    send(envelope('connect', {
      api_key: key,
      metadata: { type: state.clientMetadata.type, permissions: [], created: state.clientMetadata.created },
    }, id));
    notify();
  }

  function onAuthSuccess(msg, data) {
    const op = (msg.id && ops.get(msg.id)) || findOp((o) => o.type === 'connect');
    if (op) finishOp(op.id);
    const key = op?.key ?? pendingKey ?? lastAcceptedKey;
    lastAcceptedKey = key;
    pendingKey = null;
    state.authStatus = 'authenticated';
    state.authError = null;
    if (data.metadata) state.clientMetadata = { ...data.metadata };
    state.reconnectAttempts = 0;
    state.autoReconnect = true;
    setStatus('connected', 'Authenticated');
    for (const channel of Object.keys(state.subscriptions)) {
      const sub = state.subscriptions[channel];
      if (sub.state !== 'unsubscribing' && !findOp((o) => o.channel === channel && o.type === 'subscribe')) {
        sendSubscribe(channel);
      }
    }
    flushQueue();
    flushClientErrors();
    refreshChannels();
    refreshThreads();
  }

  function onServerError(msg, data) {
    const code = data.code ?? 'error';
    const text = `${code}: ${data.message ?? 'no message'}`;
    recordError('server', text, { code, details: data.details ?? null });
    const op = data.operation_id ? ops.get(data.operation_id) : null;
    if (op) {
      finishOp(op.id);
      failOpEffects(op, data.message ?? code);
    } else if (code === 'auth_failed' && state.authStatus === 'authenticating') {
      const connectOp = findOp((o) => o.type === 'connect');
      if (connectOp) finishOp(connectOp.id);
      failOpEffects({ type: 'connect', key: pendingKey }, data.message ?? code);
    }
  }

  function onDelivered(msg, data) {
    const messageId = data.message_id ?? msg.id;
    const op = ops.get(messageId) ?? (msg.id ? ops.get(msg.id) : null);
    if (op) finishOp(op.id);
    const item = messageById(messageId);
    if (item) {
      item.state = 'delivered';
      item.queued = false;
      item.error = null;
      if (Number.isInteger(data.seq)) item.seq = data.seq;
    }
    notify();
  }

  function onSubscribed(msg, data) {
    const channel = data.channel;
    const op = (msg.id && ops.get(msg.id)) || findOp((o) => o.type === 'subscribe' && o.channel === channel);
    if (op) finishOp(op.id);
    const sub = state.subscriptions[channel];
    if (!sub) return notify();
    sub.state = 'subscribed';
    sub.error = null;
    if (Number.isInteger(data.last_seq)) sub.lastSeq = Math.max(sub.lastSeq ?? 0, data.last_seq);
    notify();
  }

  function onUnsubscribed(msg, data) {
    const channel = data.channel;
    const op = (msg.id && ops.get(msg.id)) || findOp((o) => o.type === 'unsubscribe' && o.channel === channel);
    if (op) finishOp(op.id);
    delete state.subscriptions[channel];
    notify();
  }

  function rememberId(messageId) {
    seenMessageIds.add(messageId);
    if (seenMessageIds.size > SEEN_IDS_LIMIT) {
      seenMessageIds.delete(seenMessageIds.values().next().value);
    }
  }

  function onChannelMessage(data) {
    const { channel, seq, message_id: messageId } = data;
    const sub = state.subscriptions[channel];
    if (sub && Number.isInteger(seq)) sub.lastSeq = Math.max(sub.lastSeq ?? 0, seq);
    const own = messageById(messageId);
    if (own) {
      // Our own publish echoed back, or a duplicate: update, never add twice.
      if (own.own && own.state !== 'delivered') {
        const op = ops.get(messageId);
        if (op) finishOp(op.id);
        own.state = 'delivered';
        own.queued = false;
        own.error = null;
      }
      if (Number.isInteger(seq)) own.seq = seq;
      return notify();
    }
    if (seenMessageIds.has(messageId)) return notify();
    rememberId(messageId);
    addMessage({
      messageId,
      channel,
      sender: data.sender ?? '?',
      content: data.content ?? '',
      seq: Number.isInteger(seq) ? seq : null,
      time: data.sent_at ?? nowIso(),
      state: 'received',
      own: false,
      queued: false,
      error: null,
    });
  }

  function addMessage(item) {
    state.messages.push(item);
    if (state.messages.length > settings.messageLogLimit) {
      state.messages.splice(0, state.messages.length - settings.messageLogLimit);
    }
    notify();
  }

  // -------------------------------------------------------------- operations

  function sendSubscribe(channel) {
    const sub = state.subscriptions[channel];
    const id = newId();
    const data = { channel };
    if (sub && Number.isInteger(sub.lastSeq)) data.since_seq = sub.lastSeq;
    startOp('subscribe', id, { channel });
    send(envelope('subscribe', data, id));
  }

  function sendPublish(messageId) {
    const item = messageById(messageId);
    if (!item || item.state !== 'pending') return;
    item.queued = false;
    const op = startOp('publish', messageId, { channel: item.channel, messageId });
    op.bytes = send(envelope('publish', { channel: item.channel, content: item.content }, messageId));
  }

  function flushQueue() {
    while (ready() && state.offlineQueue.length > 0) {
      sendPublish(state.offlineQueue.shift());
    }
    notify();
  }

  function reportClientError(message, context = {}) {
    const frame = envelope('client_error', { message: String(message).slice(0, 10000), context }, newId());
    if (ready()) send(frame);
    else {
      clientErrorQueue.push(frame);
      if (clientErrorQueue.length > CLIENT_ERROR_QUEUE_LIMIT) clientErrorQueue.shift();
    }
  }

  function flushClientErrors() {
    while (ready() && clientErrorQueue.length > 0) {
      const frame = clientErrorQueue.shift();
      send({ ...frame, timestamp: nowIso() });
    }
  }

  // -------------------------------------------------------------- REST (chat threads, channels)

  async function api(path, { method = 'GET', body } = {}) {
    const headers = { Accept: 'application/json' };
    if (lastAcceptedKey) headers['X-API-Key'] = lastAcceptedKey;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetchFn(`${state.apiBase}${path}`, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let payload = null;
    try { payload = text ? JSON.parse(text) : null; } catch { payload = text; }
    if (!response.ok) {
      const detail = payload && typeof payload === 'object' ? (payload.detail ?? payload.message ?? JSON.stringify(payload)) : text;
      throw new Error(`${method} ${path} failed with HTTP ${response.status}: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`);
    }
    return payload;
  }

  function listOf(payload, key) {
    if (Array.isArray(payload)) return payload;
    if (payload && Array.isArray(payload[key])) return payload[key];
    if (payload && Array.isArray(payload.items)) return payload.items;
    return [];
  }

  async function refreshChannels() {
    if (!lastAcceptedKey) return;
    try {
      state.channels = listOf(await api('/api/channels'), 'channels').map((c) =>
        typeof c === 'string' ? { name: c, last_seq: null } : { name: c.name ?? c.channel, last_seq: c.last_seq ?? null });
      notify();
    } catch (err) {
      recordError('rest', err.message, { setLast: false });
    }
  }

  async function refreshThreads() {
    if (!lastAcceptedKey) return;
    state.threads.loading = true;
    notify();
    try {
      const fetched = listOf(await api('/api/chat/threads'), 'threads');
      // Threads are never deleted: keep the ones announced (thread_created) while the
      // request was in flight, which its answer may predate.
      const ids = new Set(fetched.map((t) => t.id));
      state.threads.items = [...fetched, ...state.threads.items.filter((t) => !ids.has(t.id))];
      state.threads.error = null;
    } catch (err) {
      state.threads.error = err.message;
      recordError('rest', err.message, { setLast: false });
    } finally {
      state.threads.loading = false;
      notify();
    }
  }

  function threadChannel(thread) {
    return thread.channel ?? `thread:${thread.id}`;
  }

  async function createThread(title) {
    title = String(title ?? '').trim();
    if (!title) {
      state.threads.error = 'Give the thread a title';
      return notify();
    }
    if (!lastAcceptedKey) {
      state.threads.error = 'Authenticate first: chat threads need an API key';
      return notify();
    }
    try {
      const created = await api('/api/chat/threads', { method: 'POST', body: { title } });
      const thread = created?.thread ?? created;
      state.threads.items = [...state.threads.items.filter((t) => t.id !== thread.id), thread];
      state.threads.error = null;
      notify();
      await openThread(thread.id);
    } catch (err) {
      state.threads.error = err.message;
      recordError('rest', err.message, { setLast: false });
    }
  }

  async function openThread(id) {
    state.threads.openId = id;
    state.threads.error = null;
    notify();
    let thread = state.threads.items.find((t) => t.id === id) ?? { id };
    let history = [];
    try {
      const payload = await api(`/api/chat/threads/${encodeURIComponent(id)}`);
      history = listOf(payload, 'messages');
      const { messages: _history, ...fields } = payload?.thread ?? payload ?? {};
      thread = { ...thread, ...fields };
      state.threads.items = state.threads.items.map((t) => (t.id === id ? { ...t, ...thread } : t));
    } catch (err) {
      state.threads.error = err.message;
      recordError('rest', err.message, { setLast: false });
    }
    const channel = threadChannel(thread);
    let maxSeq = null;
    for (const m of history) {
      if (Number.isInteger(m.seq)) maxSeq = Math.max(maxSeq ?? 0, m.seq);
      onChannelMessage({ channel, ...m });
    }
    if (!state.subscriptions[channel]) {
      subscribe(channel, { sinceSeq: maxSeq });
    }
    notify();
  }

  // -------------------------------------------------------------- public actions

  function subscribe(channel, { sinceSeq = null } = {}) {
    channel = String(channel ?? '').trim();
    if (!channelRe.test(channel)) {
      recordError('client', `Invalid channel name ${JSON.stringify(channel)}: it must match ${channelRe.source}`);
      return false;
    }
    const existing = state.subscriptions[channel];
    if (existing && existing.state !== 'failed') return true;
    state.subscriptions[channel] = { channel, state: 'pending', lastSeq: existing?.lastSeq ?? sinceSeq, error: null };
    if (ready()) sendSubscribe(channel);
    notify();
    return true;
  }

  function unsubscribe(channel) {
    const sub = state.subscriptions[channel];
    if (!sub) return;
    const inFlight = findOp((o) => o.type === 'subscribe' && o.channel === channel);
    if (inFlight) finishOp(inFlight.id);
    if (ready() && sub.state !== 'failed') {
      sub.state = 'unsubscribing';
      const id = newId();
      startOp('unsubscribe', id, { channel });
      send(envelope('unsubscribe', { channel }, id));
    } else {
      delete state.subscriptions[channel];
    }
    notify();
  }

  function publish(channel, content) {
    channel = String(channel ?? '').trim();
    content = String(content ?? '');
    if (!channelRe.test(channel)) {
      recordError('client', `Cannot publish: invalid channel name ${JSON.stringify(channel)}`);
      return null;
    }
    if (content.trim() === '') {
      recordError('client', 'Cannot publish an empty message');
      return null;
    }
    const messageId = newId();
    rememberId(messageId);
    const item = {
      messageId, channel, sender: state.clientId, content, seq: null, time: nowIso(),
      state: 'pending', own: true, queued: false, error: null,
    };
    addMessage(item);
    if (ready() && state.offlineQueue.length === 0) {
      sendPublish(messageId);
    } else if (state.offlineQueue.length >= settings.offlineQueueLimit) {
      item.state = 'failed';
      item.error = `Offline queue full (${settings.offlineQueueLimit} messages)`;
      recordError('client', item.error);
    } else {
      item.queued = true;
      state.offlineQueue.push(messageId);
    }
    notify();
    return messageId;
  }

  function authenticate(key) {
    state.statusSource = 'transport';
    key = String(key ?? '').trim();
    if (!key) {
      state.authStatus = 'failed';
      state.authError = 'enter an API key';
      return notify();
    }
    state.autoReconnect = true;
    if (socketOpen() && established && state.authStatus !== 'authenticated') {
      // A connect in flight is superseded by this one.
      const inFlight = findOp((o) => o.type === 'connect');
      if (inFlight) finishOp(inFlight.id);
      sendConnect(key);
    } else if (ws !== null && !established) {
      // Opening, or waiting for connection_established: the key goes out then.
      pendingKey = key;
      state.authStatus = 'authenticating';
      state.authError = null;
    } else {
      // No socket (closed, or waiting for a reconnect), or one already authenticated:
      // a new key needs a new connection.
      pendingKey = key;
      state.authStatus = 'authenticating';
      state.authError = null;
      dropSocket(1000, 'Re-authenticating');
      connect('Connecting to authenticate');
    }
    notify();
  }

  function disconnect() {
    state.statusSource = 'transport';
    clearReconnectTimer();
    if (ws === null) {
      if (state.status !== 'disconnected') setStatus('disconnected', 'Disconnected by the user');
      return notify();
    }
    manualClose = true;
    dropSocket(1000, 'Client disconnect');
    handleClosed(1000, 'Disconnected by the user');
  }

  function reconnect() {
    state.statusSource = 'transport';
    clearReconnectTimer();
    state.autoReconnect = true;
    dropSocket(1000, 'Reconnecting');
    connect('Reconnecting (requested by the user)');
  }

  function start() {
    for (const problem of settings.problems) recordError('client', problem);
    connect('Opening WebSocket');
  }

  // -------------------------------------------------------------- test hooks

  /** The test-mode `websocket-status` event: drive the status as the seed's setConnectionStatus. */
  function setConnectionStatus(status, error = null) {
    if (!STATUSES.includes(status)) {
      recordError('test', `websocket-status ignored: unknown status ${JSON.stringify(status)}; expected one of ${STATUSES.join(', ')}`);
      return;
    }
    // Same bookkeeping as a real close: leaving connected/connecting for disconnected/error
    // is a lost connection, i.e. one more reconnection attempt.  Nothing is scheduled and
    // the socket is not touched.
    const lost = (status === 'disconnected' || status === 'error')
      && (state.status === 'connected' || state.status === 'connecting');
    if (lost) {
      state.reconnectAttempts += 1;
      state.lastReconnect = nowIso();
    }
    if (error) recordError('test', String(error));
    state.statusSource = 'test-event';
    setStatus(status, error ? String(error) : 'Set by the websocket-status test event', { fromTestEvent: true });
  }

  /** The test-mode `websocket-message` event: handle a frame as if it came from the socket. */
  function injectMessage(message) {
    receive(message);
  }

  function getState() {
    return structuredClone(state);
  }

  return {
    getState,
    subscribeToChanges(fn) { listeners.add(fn); fn(state); return () => listeners.delete(fn); },
    start,
    connect: () => { state.statusSource = 'transport'; connect('Connecting (requested by the user)'); },
    reconnect,
    disconnect,
    authenticate,
    subscribe,
    unsubscribe,
    publish,
    refreshThreads,
    createThread,
    openThread,
    closeThread() { state.threads.openId = null; notify(); },
    reportClientError,
    setConnectionStatus,
    injectMessage,
    seed(n) { random.seed(n); state.backoff.seeded = random.seeded; notify(); return random.seeded; },
    random: () => random.next(),
    settings,
  };
}
