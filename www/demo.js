// Parley web demo: sessions from REST, live chat over the broker's WebSocket.
// Plain JavaScript module, no build step. The broker is found through GET / (ws_url).
import { Connection } from './parley-conn.js';

const KEY_STORE = 'parley.apiKey';      // sessionStorage: this tab only
const THEME_STORE = 'parley.theme';     // localStorage: a display preference
const SESSION_REFRESH_MS = 5000;
const TYPING_IDLE_MS = 3000;            // typing_stop after this long without input
const TYPING_REPEAT_MS = 5000;          // the broker expires typing after 10 s
const REMOTE_TYPING_TTL_MS = 12000;     // in case a typing:false never arrives
const HISTORY_PAGE = 100;

const $ = (id) => document.getElementById(id);
const el = {
  conn: $('conn'), connText: $('conn-text'), latency: $('latency'), reconnectNow: $('reconnect-now'),
  keyButton: $('key-button'), themeToggle: $('theme-toggle'),
  sessionsTotal: $('sessions-total'), sessionList: $('session-list'), sessionsError: $('sessions-error'),
  createForm: $('create-form'), newTitle: $('new-title'),
  chatTitle: $('chat-title'), chatSub: $('chat-sub'), presence: $('presence'),
  clearButton: $('clear-button'), deleteButton: $('delete-button'),
  logWrap: $('log-wrap'), loadOlder: $('load-older'), messages: $('messages'), activity: $('activity'),
  composer: $('composer'), input: $('message-input'), sendButton: $('send-button'), stopButton: $('stop-button'),
  toast: $('toast'),
  keyDialog: $('key-dialog'), keyForm: $('key-form'), keyInput: $('key-input'), keyError: $('key-error'),
  keyWhy: $('key-why'), keyForget: $('key-forget'),
  confirmDialog: $('confirm-dialog'), confirmTitle: $('confirm-title'), confirmText: $('confirm-text'),
  confirmOk: $('confirm-ok'),
};

const state = {
  apiKey: sessionStorage.getItem(KEY_STORE) || '',
  wsUrl: null,
  connId: null,            // our connection_id on the current socket
  session: null,           // the open session: {id, title, model}
  openToken: 0,            // guards against a slow REST answer for a session left since
  joined: false,           // session_joined received on the current socket
  loaded: false,           // the open session's history came from REST
  lastId: 0,               // highest message id shown (for join_session since)
  oldestId: 0,             // lowest message id shown (for "load earlier")
  shown: new Map(),        // message id -> <li>
  mine: new Set(),         // client_msg_ids this tab sent
  pending: new Map(),      // client_msg_id -> {li, text} not yet acknowledged
  streams: new Map(),      // response_id -> {li, body, text, chunks}
  typers: new Map(),       // connection_id -> expiry timer
  clients: 0,
  typingSent: false,
  typingIdleTimer: null,
  typingRepeatTimer: null,
  needKey: false,
  deleting: null,          // the session this tab is deleting
  keyDismissed: false,     // the key dialog was closed without a key: do not pop it up again
  refreshTimer: null,
  refreshSoon: null,
  refreshLater: null,
  sessions: [],
};

// ---------------------------------------------------------------- REST

class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (state.apiKey) headers.Authorization = `Bearer ${state.apiKey}`;
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, 'network', 'the REST service cannot be reached');
  }
  let data = null;
  try { data = await res.json(); } catch { /* not JSON */ }
  if (!res.ok) {
    const err = data && data.error ? data.error : {};
    if (res.status === 401) askForKey(err.message);
    throw new ApiError(res.status, err.code, err.message);
  }
  return data;
}

// ---------------------------------------------------------------- small helpers

function who(msg) {
  if (msg.role === 'assistant') return 'Assistant';
  if (msg.role === 'system') return 'System';
  if (msg.role === 'event') return 'Event';
  if ((msg.client_msg_id && state.mine.has(msg.client_msg_id)) ||
      (msg.connection_id && msg.connection_id === state.connId)) return 'You';
  if (msg.connection_id === null) return 'API';
  if (msg.connection_id) return guest(msg.connection_id);
  return 'User'; // history from REST does not say who
}

function guest(connectionId) {
  return `Guest ${String(connectionId).slice(0, 4)}`;
}

function timeText(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

let toastTimer = null;
function toast(text, kind = 'error') {
  el.toast.textContent = text;
  el.toast.dataset.kind = kind;
  el.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.toast.hidden = true; }, 6000);
}

function nearBottom() {
  const w = el.logWrap;
  return w.scrollHeight - w.scrollTop - w.clientHeight < 80;
}

function scrollDown(force) {
  if (force || nearBottom()) el.logWrap.scrollTop = el.logWrap.scrollHeight;
}

// Stay at the newest message when the conversation's box changes size (phone rotation,
// the window resized) unless the reader has scrolled up.
let stickToBottom = true;
el.logWrap.addEventListener('scroll', () => { stickToBottom = nearBottom(); });
new ResizeObserver(() => { if (stickToBottom) el.logWrap.scrollTop = el.logWrap.scrollHeight; }).observe(el.logWrap);

// ---------------------------------------------------------------- theme

const phone = matchMedia('(max-width: 720px)'); // the one-column layout of demo.css
const darkQuery = matchMedia('(prefers-color-scheme: dark)'); // kept: its listener lives as long

function applyTheme() {
  const stored = localStorage.getItem(THEME_STORE);
  const dark = stored ? stored === 'dark' : darkQuery.matches;
  document.documentElement.dataset.theme = dark ? 'dark' : 'light';
  el.themeToggle.setAttribute('aria-pressed', String(dark));
  el.themeToggle.textContent = dark ? 'Light theme' : 'Dark theme';
}

el.themeToggle.addEventListener('click', () => {
  const dark = document.documentElement.dataset.theme === 'dark';
  localStorage.setItem(THEME_STORE, dark ? 'light' : 'dark');
  applyTheme();
});
darkQuery.addEventListener('change', applyTheme);
applyTheme();

// ---------------------------------------------------------------- API key

function askForKey(why) {
  state.needKey = true;
  el.keyButton.hidden = false;
  if (state.apiKey) {
    el.keyError.textContent = why || 'The key was not accepted.';
    el.keyError.hidden = false;
  } else {
    el.keyError.hidden = true;
  }
  el.keyWhy.textContent = 'This Parley asks for an API key (an administrator makes one with ' +
    '"parley-rest keys add NAME"). It is kept for this browser tab only.';
  if (!el.keyDialog.open && !state.keyDismissed) {
    el.keyInput.value = '';
    el.keyDialog.showModal();
    el.keyInput.focus();
  }
}

el.keyForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const key = el.keyInput.value.trim();
  if (!key) return;
  state.apiKey = key;
  sessionStorage.setItem(KEY_STORE, key);
  state.needKey = false;
  state.keyDismissed = false;
  el.keyDialog.close();
  el.keyButton.hidden = false;
  refreshSessions().then(() => { if (!state.needKey) conn.reconnectNow(); });
});

el.keyDialog.addEventListener('cancel', () => { state.keyDismissed = true; });

el.keyForget.addEventListener('click', () => {
  state.apiKey = '';
  sessionStorage.removeItem(KEY_STORE);
  el.keyInput.value = '';
  el.keyError.hidden = true;
  toast('The API key was forgotten.', 'info');
});

el.keyButton.addEventListener('click', () => {
  el.keyError.hidden = true;
  el.keyInput.value = '';
  if (!el.keyDialog.open) el.keyDialog.showModal();
  el.keyInput.focus();
});

// ---------------------------------------------------------------- confirm dialog

function confirmAction(title, text, okLabel) {
  return new Promise((resolve) => {
    el.confirmTitle.textContent = title;
    el.confirmText.textContent = text;
    el.confirmOk.textContent = okLabel;
    el.confirmDialog.returnValue = 'cancel';
    el.confirmDialog.addEventListener('close', () => resolve(el.confirmDialog.returnValue === 'ok'), { once: true });
    el.confirmDialog.showModal();
    $('confirm-cancel').focus();
  });
}

// ---------------------------------------------------------------- connection status

const conn = new Connection(() => {
  const url = new URL(state.wsUrl);
  if (state.apiKey) url.searchParams.set('api_key', state.apiKey);
  return url.toString();
});

let countdownTimer = null;
function showConnState() {
  const s = conn.state;
  el.conn.dataset.state = s;
  clearInterval(countdownTimer);
  el.reconnectNow.hidden = s !== 'waiting';
  if (s === 'open') {
    el.connText.textContent = state.joined || !state.session ? 'Connected' : 'Connected, joining…';
    el.latency.textContent = conn.latency === null ? '' : `· ${conn.latency} ms`;
    el.conn.title = conn.latency === null ? '' : `round trip of the last ping: ${conn.latency} ms`;
  } else if (s === 'connecting') {
    el.connText.textContent = conn.attempt ? `Reconnecting (attempt ${conn.attempt + 1})…` : 'Connecting…';
    el.latency.textContent = '';
  } else if (s === 'waiting') {
    const tick = () => {
      const left = Math.max(0, Math.ceil((conn.retryAt - Date.now()) / 1000));
      el.connText.textContent = `Disconnected · reconnecting in ${left} s`;
      el.latency.textContent = `(attempt ${conn.attempt + 1})`;
    };
    tick();
    countdownTimer = setInterval(tick, 500);
  } else {
    el.connText.textContent = 'Offline';
    el.latency.textContent = '';
  }
  updateComposer();
}

conn.addEventListener('state', showConnState);
el.reconnectNow.addEventListener('click', () => conn.reconnectNow());
addEventListener('online', () => { if (conn.state === 'waiting') conn.reconnectNow(); });

conn.addEventListener('open', () => {
  state.joined = false;
  state.connId = null;
});

conn.addEventListener('message', (ev) => handle(ev.detail));

// ---------------------------------------------------------------- session list

async function refreshSessions() {
  let data;
  try {
    data = await api('GET', '/sessions?limit=100');
  } catch (e) {
    if (e.status !== 401) {
      el.sessionsError.textContent = `Could not load the sessions: ${e.message}`;
      el.sessionsError.hidden = false;
    }
    return;
  }
  el.sessionsError.hidden = true;
  state.needKey = false;
  state.sessions = data.sessions;
  renderSessions(data);
}

function renderSessions(data) {
  el.sessionsTotal.textContent = `${data.total}`;
  el.sessionsTotal.setAttribute('aria-label', `${data.total} sessions`);
  const focused = document.activeElement && document.activeElement.dataset
    ? document.activeElement.dataset.sessionId : undefined;
  const frag = document.createDocumentFragment();
  if (data.sessions.length === 0) {
    const li = document.createElement('li');
    li.className = 'empty muted';
    li.textContent = 'No sessions yet.';
    frag.append(li);
  }
  for (const s of data.sessions) {
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'session-item';
    b.dataset.sessionId = s.session_id;
    b.dataset.messageCount = String(s.message_count);
    b.dataset.clients = String(s.clients);
    if (state.session && state.session.id === s.session_id) b.setAttribute('aria-current', 'true');
    const t = document.createElement('span');
    t.className = 'session-title';
    t.textContent = s.title || s.channel || 'Untitled';
    const m = document.createElement('span');
    m.className = 'session-meta';
    const msgs = s.message_count === 1 ? '1 message' : `${s.message_count} messages`;
    m.textContent = `${msgs} · ${s.clients} here`;
    b.append(t, m);
    b.addEventListener('click', () => openSession(s.session_id));
    li.append(b);
    frag.append(li);
  }
  el.sessionList.replaceChildren(frag);
  if (focused) {
    const again = el.sessionList.querySelector(`[data-session-id="${focused}"]`);
    if (again) again.focus();
  }
}

// After an event: refresh soon, and once more when the broker has published its live
// figures (once a second) so that the client counts are current.
function scheduleRefresh() {
  clearTimeout(state.refreshSoon);
  clearTimeout(state.refreshLater);
  state.refreshSoon = setTimeout(refreshSessions, 250);
  state.refreshLater = setTimeout(refreshSessions, 2200);
}

el.createForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const title = el.newTitle.value.trim();
  try {
    const s = await api('POST', '/sessions/new', title ? { title } : {});
    el.newTitle.value = '';
    await openSession(s.session_id);
    refreshSessions();
    el.input.focus();
  } catch (e) {
    if (e.status !== 401) toast(`Could not create the session: ${e.message}`);
  }
});

// ---------------------------------------------------------------- the conversation

function resetConversation() {
  state.shown.clear();
  state.pending.clear();
  state.streams.clear();
  for (const t of state.typers.values()) clearTimeout(t);
  state.typers.clear();
  state.lastId = 0;
  state.oldestId = 0;
  el.messages.replaceChildren();
  el.loadOlder.hidden = true;
  renderTyping();
  updateStop();
}

function setSessionHeader() {
  const s = state.session;
  el.chatTitle.textContent = s ? (s.title || 'Untitled session') : 'No session open';
  el.chatSub.textContent = s ? `${s.id} · model ${s.model}` : 'Create a session or pick one from the list.';
  el.clearButton.disabled = !s;
  el.deleteButton.disabled = !s;
  el.presence.hidden = !s;
  for (const b of el.sessionList.querySelectorAll('.session-item')) {
    if (s && b.dataset.sessionId === s.id) b.setAttribute('aria-current', 'true');
    else b.removeAttribute('aria-current');
  }
  updateComposer();
}

function setClients(n) {
  state.clients = n;
  el.presence.dataset.clients = String(n);
  el.presence.textContent = n === 1 ? '1 person here' : `${n} people here`;
}

async function openSession(id) {
  if (state.session && state.session.id === id && state.joined) return;
  stopTyping();
  if (state.session && state.session.id !== id && state.joined) conn.send({ type: 'leave_session', session_id: state.session.id });
  const token = ++state.openToken;
  state.session = { id, title: '', model: '' };
  state.joined = false;
  state.loaded = false;
  resetConversation();
  setClients(0);
  setSessionHeader();
  history.replaceState(null, '', `#${id}`);
  el.chatTitle.textContent = 'Loading…';
  let data;
  try {
    data = await api('GET', `/sessions/${encodeURIComponent(id)}?limit=${HISTORY_PAGE}`);
  } catch (e) {
    if (token !== state.openToken) return;
    state.session = null;
    setSessionHeader();
    history.replaceState(null, '', location.pathname);
    if (e.status === 404) toast('That session does not exist (any more).');
    else if (e.status !== 401) toast(`Could not open the session: ${e.message}`);
    return;
  }
  if (token !== state.openToken) return;
  state.session = { id, title: data.title, model: data.model };
  setSessionHeader();
  setClients(data.clients);
  for (const m of data.messages) addMessage(m);
  el.loadOlder.hidden = !data.has_more;
  state.loaded = true;
  scrollDown(true);
  if (phone.matches) $('chat').scrollIntoView({ block: 'start' });
  join();
}

function join() {
  if (!state.session || !state.loaded || !conn.isOpen || state.connId === null) return;
  conn.send({ type: 'join_session', session_id: state.session.id, since: state.lastId });
}

el.loadOlder.addEventListener('click', async () => {
  if (!state.session || !state.oldestId) return;
  const id = state.session.id;
  try {
    const data = await api('GET', `/sessions/${id}?limit=${HISTORY_PAGE}&before=${state.oldestId}`);
    if (!state.session || state.session.id !== id) return;
    const before = el.logWrap.scrollHeight;
    for (const m of data.messages) addMessage(m);
    el.loadOlder.hidden = !data.has_more;
    el.logWrap.scrollTop += el.logWrap.scrollHeight - before;
  } catch (e) {
    if (e.status !== 401) toast(`Could not load earlier messages: ${e.message}`);
  }
});

function messageItem(m, label) {
  const li = document.createElement('li');
  li.className = `msg role-${m.role}`;
  li.dataset.role = m.role;
  if (label === 'You') li.classList.add('mine');
  const meta = document.createElement('div');
  meta.className = 'meta';
  const w = document.createElement('span');
  w.className = 'who';
  w.textContent = label;
  const t = document.createElement('time');
  if (m.created_at) {
    t.dateTime = m.created_at;
    t.textContent = timeText(m.created_at);
  }
  meta.append(w, t);
  const body = document.createElement('div');
  body.className = 'body';
  body.textContent = m.content;
  li.append(meta, body);
  return li;
}

// Shows a stored message once (by id), in id order.
function addMessage(m) {
  if (state.shown.has(m.id)) return state.shown.get(m.id);
  let li = null;
  if (m.client_msg_id && state.pending.has(m.client_msg_id)) {
    li = state.pending.get(m.client_msg_id).li;
    state.pending.delete(m.client_msg_id);
    li.classList.remove('pending');
    li.querySelector('.who').textContent = 'You';
    const t = li.querySelector('time');
    t.dateTime = m.created_at;
    t.textContent = timeText(m.created_at);
  } else {
    li = messageItem(m, who(m));
  }
  li.dataset.id = String(m.id);
  li.classList.remove('queued');
  state.shown.set(m.id, li);
  if (!li.isConnected) {
    // in id order: before the first shown message with a larger id or the first of
    // this tab's messages still waiting for their acknowledgement, else at the end
    let next = null;
    for (const node of el.messages.children) {
      if ((node.dataset.id && Number(node.dataset.id) > m.id) ||
          (!node.dataset.id && node.classList.contains('pending'))) { next = node; break; }
    }
    if (next) next.before(li);
    else el.messages.append(li);
  }
  state.lastId = Math.max(state.lastId, m.id);
  state.oldestId = state.oldestId ? Math.min(state.oldestId, m.id) : m.id;
  return li;
}

function notice(text) {
  const li = document.createElement('li');
  li.className = 'notice';
  li.textContent = text;
  el.messages.append(li);
  scrollDown();
}

// ---------------------------------------------------------------- streaming replies

function streamFor(rid, created) {
  let s = state.streams.get(rid);
  if (!s && created) {
    const li = messageItem({ role: 'assistant', content: '' }, 'Assistant');
    li.classList.add('streaming');
    li.dataset.responseId = rid;
    li.setAttribute('aria-busy', 'true');
    el.messages.append(li);
    s = { li, body: li.querySelector('.body'), text: '', chunks: 0 };
    state.streams.set(rid, s);
    updateStop();
  }
  return s;
}

function finishStream(rid, done) {
  const s = state.streams.get(rid);
  if (!s) return;
  state.streams.delete(rid);
  s.li.classList.remove('streaming');
  s.li.removeAttribute('aria-busy');
  if (done) {
    s.li.dataset.id = String(done.message_id);
    state.shown.set(done.message_id, s.li);
    state.lastId = Math.max(state.lastId, done.message_id);
    const t = s.li.querySelector('time');
    t.dateTime = new Date().toISOString();
    t.textContent = timeText(t.dateTime);
    if (done.stopped) {
      s.li.classList.add('stopped');
      const tag = document.createElement('span');
      tag.className = 'tag';
      tag.textContent = 'stopped';
      s.li.querySelector('.meta').append(tag);
    }
  } else {
    s.li.remove();
  }
  updateStop();
}

function updateStop() {
  const streaming = state.streams.size > 0;
  el.stopButton.hidden = !streaming;
  if (!streaming && el.activity.dataset.kind === 'assistant') setActivity('', '');
}

function setActivity(text, kind) {
  el.activity.textContent = text;
  el.activity.dataset.kind = kind;
}

function stopReply() {
  if (!state.session || state.streams.size === 0) return;
  conn.send({ type: 'stop', session_id: state.session.id });
}

el.stopButton.addEventListener('click', () => { stopReply(); el.input.focus(); });
document.addEventListener('keydown', (ev) => {
  if (ev.key === 'Escape' && !el.keyDialog.open && !el.confirmDialog.open && state.streams.size) {
    ev.preventDefault();
    stopReply();
  }
});

// ---------------------------------------------------------------- typing indicators

function renderTyping() {
  const n = state.typers.size;
  el.activity.dataset.typing = String(n);
  if (n === 0) {
    if (el.activity.dataset.kind === 'typing') setActivity('', '');
    return;
  }
  const names = [...state.typers.keys()].map(guest);
  setActivity(n === 1 ? `${names[0]} is typing…` : `${n} people are typing…`, 'typing');
}

function remoteTyping(connectionId, typing) {
  clearTimeout(state.typers.get(connectionId));
  if (typing) {
    state.typers.set(connectionId, setTimeout(() => { state.typers.delete(connectionId); renderTyping(); },
      REMOTE_TYPING_TTL_MS));
  } else {
    state.typers.delete(connectionId);
  }
  renderTyping();
}

function startTyping() {
  if (!state.session || !state.joined) return;
  if (!state.typingSent) {
    state.typingSent = conn.send({ type: 'typing_start', session_id: state.session.id });
    clearInterval(state.typingRepeatTimer);
    state.typingRepeatTimer = setInterval(() => {
      if (state.typingSent && state.session) conn.send({ type: 'typing_start', session_id: state.session.id });
    }, TYPING_REPEAT_MS);
  }
  clearTimeout(state.typingIdleTimer);
  state.typingIdleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
}

function stopTyping() {
  clearTimeout(state.typingIdleTimer);
  clearInterval(state.typingRepeatTimer);
  if (state.typingSent && state.session && state.joined) conn.send({ type: 'typing_stop', session_id: state.session.id });
  state.typingSent = false;
}

el.input.addEventListener('input', () => {
  if (el.input.value.trim() === '') stopTyping();
  else startTyping();
});

// ---------------------------------------------------------------- sending

function updateComposer() {
  const has = Boolean(state.session);
  el.input.disabled = !has;
  el.sendButton.disabled = !has;
}

function sendChat(text, cid) {
  return conn.send({ type: 'chat', session_id: state.session.id, message: text, client_msg_id: cid });
}

el.composer.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = el.input.value;
  if (!state.session || text.trim() === '') return;
  stopTyping();
  const cid = newId();
  state.mine.add(cid);
  const li = messageItem({ role: 'user', content: text }, 'You · sending');
  li.classList.add('mine', 'pending');
  li.dataset.clientMsgId = cid;
  el.messages.append(li);
  state.pending.set(cid, { li, text, session: state.session.id });
  if (!(state.joined && sendChat(text, cid))) {
    li.classList.add('queued');
    li.querySelector('.who').textContent = 'You · waiting for the connection';
  }
  el.input.value = '';
  scrollDown(true);
});

el.input.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    el.composer.requestSubmit();
  }
});

// After a (re)join: everything not acknowledged yet is sent again; the client_msg_id
// makes a resend of a message the broker already stored harmless.
function flushPending() {
  for (const [cid, p] of state.pending) {
    if (state.session && p.session === state.session.id && sendChat(p.text, cid)) {
      p.li.classList.remove('queued');
      p.li.querySelector('.who').textContent = 'You · sending';
    }
  }
}

// ---------------------------------------------------------------- clear and delete

el.clearButton.addEventListener('click', async () => {
  if (!state.session) return;
  const s = state.session;
  if (!(await confirmAction('Clear this conversation?', `Every message of "${s.title || s.id}" is deleted for everyone.`, 'Clear'))) return;
  try {
    await api('POST', `/sessions/${s.id}/clear`);
    if (state.session && state.session.id === s.id) clearedView();
    scheduleRefresh();
  } catch (e) {
    if (e.status !== 401) toast(`Could not clear: ${e.message}`);
  }
});

el.deleteButton.addEventListener('click', async () => {
  if (!state.session) return;
  const s = state.session;
  if (!(await confirmAction('Delete this session?', `"${s.title || s.id}" and its history are deleted for everyone.`, 'Delete'))) return;
  state.deleting = s.id; // the broker's session_deleted may come before the REST answer
  try {
    await api('DELETE', `/sessions/${s.id}`);
    if (state.session && state.session.id === s.id) closedView('You deleted this session.');
    scheduleRefresh();
  } catch (e) {
    if (e.status !== 401) toast(`Could not delete: ${e.message}`);
  } finally {
    state.deleting = null;
  }
});

function clearedView() {
  const last = state.lastId;
  for (const rid of [...state.streams.keys()]) finishStream(rid, null);
  resetConversation();
  state.lastId = last; // ids are never reused: resume after the last one seen
  notice('The history was cleared.');
}

function closedView(text) {
  stopTyping();
  resetConversation();
  state.session = null;
  state.joined = false;
  state.loaded = false;
  setSessionHeader();
  history.replaceState(null, '', location.pathname);
  notice(text);
  el.messages.lastElementChild.classList.add('deleted-notice');
}

// ---------------------------------------------------------------- broker events

function handle(m) {
  const sid = state.session && state.session.id;
  switch (m.type) {
    case 'connected':
      state.connId = m.connection_id;
      if (m.server_info && m.server_info.auth_required && !state.apiKey) askForKey();
      join();
      showConnState();
      break;
    case 'pong':
      showConnState();
      break;
    case 'session_joined':
      if (m.session_id !== sid) break;
      state.joined = true;
      setClients(m.clients);
      // replies cut off by a reconnect: the live one continues, the others are in the replay
      for (const rid of [...state.streams.keys()]) {
        if (m.streaming && m.streaming.response_id === rid) continue;
        finishStream(rid, null);
      }
      for (const msg of m.messages || []) addMessage(msg);
      // a long replay comes in pages: ask for the next one
      if (m.has_more && m.last_id) {
        conn.send({ type: 'join_session', session_id: sid, since: m.last_id });
      }
      if (m.streaming) {
        const s = streamFor(m.streaming.response_id, true);
        s.text = m.streaming.text;
        s.body.textContent = s.text;
      }
      for (const t of state.typers.values()) clearTimeout(t);
      state.typers.clear();
      renderTyping();
      flushPending();
      scrollDown(true);
      showConnState();
      scheduleRefresh();
      break;
    case 'session_left':
      break;
    case 'status':
      if (m.session_id === sid) setActivity('The assistant is thinking…', 'assistant');
      break;
    case 'response_start':
      if (m.session_id !== sid) break;
      streamFor(m.response_id, true);
      setActivity('The assistant is answering…', 'assistant');
      scrollDown();
      break;
    case 'chunk': {
      if (m.session_id !== sid) break;
      const s = streamFor(m.response_id, true);
      s.chunks += 1;
      s.li.dataset.chunks = String(s.chunks);
      if (m.text) {
        s.text += m.text;
        s.body.textContent = s.text;
        scrollDown();
      }
      break;
    }
    case 'response_complete':
      if (m.session_id !== sid) break;
      finishStream(m.response_id, m);
      scheduleRefresh();
      break;
    case 'session_update':
      if (m.session_id !== sid) { scheduleRefresh(); break; }
      onUpdate(m);
      break;
    case 'error':
      onError(m);
      break;
    default:
      break;
  }
}

function onUpdate(m) {
  switch (m.update_type) {
    case 'message_added':
      addMessage(m.message);
      if (m.message.connection_id) remoteTyping(m.message.connection_id, false);
      scrollDown(m.message.client_msg_id && state.mine.has(m.message.client_msg_id));
      scheduleRefresh();
      break;
    case 'user_typing':
      remoteTyping(m.connection_id, m.typing);
      break;
    case 'user_joined':
      setClients(m.clients);
      notice(`${guest(m.connection_id)} joined`);
      scheduleRefresh();
      break;
    case 'user_left':
      setClients(m.clients);
      remoteTyping(m.connection_id, false);
      notice(`${guest(m.connection_id)} left`);
      scheduleRefresh();
      break;
    case 'presence': // a burst of joins and leaves, told together
      setClients(m.clients);
      for (const id of m.left || []) remoteTyping(id, false);
      notice(`${(m.joined || []).length} joined, ${(m.left || []).length} left`);
      scheduleRefresh();
      break;
    case 'history_cleared':
      clearedView();
      scheduleRefresh();
      break;
    case 'session_deleted':
      closedView(state.deleting === m.session_id ? 'You deleted this session.' : 'This session was deleted.');
      scheduleRefresh();
      break;
    default:
      break;
  }
}

function onError(m) {
  if (m.code === 'session_not_found' && state.session && m.request_type === 'join_session') {
    closedView('This session does not exist any more.');
    scheduleRefresh();
    return;
  }
  if (m.code === 'unauthorized') {
    askForKey(m.message);
    return;
  }
  toast(`${m.message || m.code}`);
}

// ---------------------------------------------------------------- start

async function start() {
  try {
    const root = await api('GET', '/');
    state.wsUrl = root.ws_url;
  } catch (e) {
    el.connText.textContent = 'The REST service cannot be reached; reload to try again.';
    el.conn.dataset.state = 'stopped';
    return;
  }
  if (state.apiKey) el.keyButton.hidden = false;
  await refreshSessions();
  state.refreshTimer = setInterval(refreshSessions, SESSION_REFRESH_MS);
  conn.start();
  const want = location.hash.slice(1);
  if (/^[0-9a-f]{16}$/.test(want)) openSession(want);
}

start();
