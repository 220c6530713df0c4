// Parley web demo: sessions from REST, live chat over the broker's WebSocket.
// Plain JavaScript module, no build step. The broker is found through GET / (ws_url).
import { Connection } from './parley-conn.js';

const KEY_STORE = 'parley.apiKey';      // sessionStorage: this tab only
const THEME_STORE = 'parley.theme';     // localStorage: a display preference
const NAME_STORE = 'parley.name';       // localStorage: the display name, asked for once
const CONNS_STORE = 'parley.myConnections'; // localStorage: this browser's recent connection ids
const CONNS_KEPT = 50;
const NAME_MAX_CHARS = 64;              // SPEC 9: 1 to 64 characters, no control characters
const SESSION_REFRESH_MS = 5000;
const TYPING_IDLE_MS = 3000;            // typing_stop after this long without input
const TYPING_REPEAT_MS = 5000;          // the broker expires typing after 10 s
const REMOTE_TYPING_TTL_MS = 12000;     // in case a typing:false never arrives
const HISTORY_PAGE = 100;

const $ = (id) => document.getElementById(id);
const el = {
  conn: $('conn'), connText: $('conn-text'), latency: $('latency'), reconnectNow: $('reconnect-now'),
  keyButton: $('key-button'), themeToggle: $('theme-toggle'), nameButton: $('name-button'),
  people: $('people'), replyMode: $('reply-mode'),
  nameDialog: $('name-dialog'), nameForm: $('name-form'), nameInput: $('name-input'), nameError: $('name-error'),
  nameCancel: $('name-cancel'),
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
  typers: new Map(),       // connection_id -> {timer, name}
  members: new Map(),      // connection_id -> name: who is in the open session
  name: '',                // the display name we give (localStorage), '' for the server's default
  nameRefused: false,      // the server refused state.name: joins go without it
  myConns: new Set(),      // connection ids of this browser (recent ones): their messages are ours
  replyMode: '',           // the open session's reply_mode as last told by the server
  replacing: null,         // the <li> of a superseded reply, replaced by the next reply
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

// The label of a message's author: its author.name (SPEC 9) when it has one.
function who(msg) {
  if (msg.role === 'assistant') return 'Assistant';
  if (msg.role === 'system') return 'System';
  if (msg.role === 'event') return 'Event';
  if (msg.author && typeof msg.author.name === 'string' && msg.author.name) return msg.author.name;
  if (isMine(msg)) return myName();
  if (msg.connection_id === null) return 'API'; // REST without a name or key
  if (msg.connection_id) return guest(msg.connection_id);
  return 'User'; // stored before names existed
}

// Whether this browser wrote msg: one of its client_msg_ids, or one of its connections.
function isMine(msg) {
  if (msg.role !== 'user') return false;
  if (msg.client_msg_id && state.mine.has(msg.client_msg_id)) return true;
  const cid = (msg.author && msg.author.connection_id) || msg.connection_id;
  return Boolean(cid) && state.myConns.has(cid);
}

// The server's default name (SPEC 9), when a member's name is unknown.
function guest(connectionId) {
  return `guest-${String(connectionId).slice(0, 4)}`;
}

// What the others see as our name: the one we gave, else the server's (from members).
function myName() {
  if (state.name && !state.nameRefused) return state.name;
  if (state.connId && state.members.has(state.connId)) return state.members.get(state.connId);
  return 'You';
}

function nameOf(connectionId, given) {
  if (typeof given === 'string' && given) return given;
  return state.members.get(connectionId) || guest(connectionId);
}

// "Ann", "Ann and Bob", "Ann, Bob and Cy"
function listNames(names) {
  if (names.length <= 1) return names.join('');
  return `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
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

// ---------------------------------------------------------------- display name

// Why name is not a valid display name (SPEC 9: 1 to 64 characters, no control
// characters), or '' when it is. The server checks the same and answers invalid_field.
function nameProblem(name) {
  const chars = [...name].length;
  if (chars === 0) return `Enter a name of 1 to ${NAME_MAX_CHARS} characters.`;
  if (chars > NAME_MAX_CHARS) return `A name has at most ${NAME_MAX_CHARS} characters; this one has ${chars}.`;
  if (/\p{Cc}/u.test(name)) return 'A name cannot contain control characters (a line break, a tab, …).';
  if (/\p{Cs}/u.test(name)) return 'That name is not valid text.'; // a lone surrogate
  return '';
}

function loadName() {
  const stored = localStorage.getItem(NAME_STORE) || '';
  state.name = stored && !nameProblem(stored) ? stored : '';
}

function showName() {
  const n = state.name && !state.nameRefused ? state.name : '';
  el.nameButton.textContent = n ? `Name: ${n}` : 'Choose a name';
  el.nameButton.setAttribute('aria-label', n ? `Your name: ${n}. Change it` : 'Choose your name');
}

let nameResolve = null; // the first visit waits for the name dialog
function askForName(error) {
  el.nameInput.value = state.name || '';
  el.nameError.textContent = error || '';
  el.nameError.hidden = !error;
  if (!el.nameDialog.open) el.nameDialog.showModal();
  el.nameInput.focus();
  el.nameInput.select();
}

function nameDialogDone() {
  if (el.nameDialog.open) el.nameDialog.close();
  if (nameResolve) { const r = nameResolve; nameResolve = null; r(); }
}

el.nameForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const name = el.nameInput.value.trim();
  const why = nameProblem(name);
  if (why) {
    el.nameError.textContent = why;
    el.nameError.hidden = false;
    el.nameInput.setAttribute('aria-invalid', 'true');
    el.nameInput.focus();
    return;
  }
  el.nameInput.removeAttribute('aria-invalid');
  const changed = name !== state.name || state.nameRefused;
  state.name = name;
  state.nameRefused = false;
  localStorage.setItem(NAME_STORE, name);
  showName();
  nameDialogDone();
  if (changed) rename();
});

el.nameCancel.addEventListener('click', nameDialogDone);
el.nameDialog.addEventListener('close', () => { if (nameResolve) nameDialogDone(); });
el.nameButton.addEventListener('click', () => askForName(''));

// A new name reaches the others: the name given with join_session is the connection's
// from then on; leaving and joining again tells the session (user_left, user_joined).
function rename() {
  if (!state.session || !state.joined || !conn.isOpen) return;
  stopTyping();
  conn.send({ type: 'leave_session', session_id: state.session.id });
  state.joined = false;
  join();
}

// The server refused our name (invalid_field naming name): say so, and go on without it.
function nameRefused(m) {
  const refused = state.name;
  state.nameRefused = true;
  localStorage.removeItem(NAME_STORE);
  showName();
  askForName(`The server refused the name "${refused}": ${m.message || m.code}`);
  join();
}

function rememberConnection(id) {
  state.myConns.add(id);
  let list = [];
  try { list = JSON.parse(localStorage.getItem(CONNS_STORE) || '[]'); } catch { /* reset */ }
  if (!Array.isArray(list)) list = [];
  list = list.filter((x) => typeof x === 'string' && x !== id).concat([id]).slice(-CONNS_KEPT);
  localStorage.setItem(CONNS_STORE, JSON.stringify(list));
}

function loadConnections() {
  try {
    const list = JSON.parse(localStorage.getItem(CONNS_STORE) || '[]');
    if (Array.isArray(list)) for (const x of list) if (typeof x === 'string') state.myConns.add(x);
  } catch { /* none */ }
}

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
  for (const t of state.typers.values()) clearTimeout(t.timer);
  state.typers.clear();
  state.lastId = 0;
  state.oldestId = 0;
  state.replacing = null;
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
  el.people.hidden = !s;
  el.replyMode.disabled = !s || !state.joined;
  for (const b of el.sessionList.querySelectorAll('.session-item')) {
    if (s && b.dataset.sessionId === s.id) b.setAttribute('aria-current', 'true');
    else b.removeAttribute('aria-current');
  }
  updateComposer();
}

// The list of who is here, from session_joined.members and the joins and leaves since.
function renderPeople() {
  const frag = document.createDocumentFragment();
  const ids = [...state.members.keys()].sort((a, b) => {
    if (a === state.connId) return -1;
    if (b === state.connId) return 1;
    return state.members.get(a).localeCompare(state.members.get(b));
  });
  for (const id of ids) {
    const li = document.createElement('li');
    li.className = 'person';
    li.dataset.connectionId = id;
    li.textContent = state.members.get(id);
    li.title = state.members.get(id);
    if (id === state.connId) {
      li.classList.add('me');
      li.append(' (you)');
    }
    frag.append(li);
  }
  el.people.replaceChildren(frag);
}

function setReplyMode(mode) {
  if (!['always', 'mention', 'off'].includes(mode)) return;
  state.replyMode = mode;
  el.replyMode.value = mode;
  el.input.placeholder = mode === 'mention' ? 'Write a message… (@assistant for a reply)' : 'Write a message…';
}

const MODE_TEXT = {
  always: 'The assistant now answers every message.',
  mention: 'The assistant now answers only messages that mention @assistant.',
  off: 'The assistant is now off: it answers no message.',
};

el.replyMode.addEventListener('change', async () => {
  if (!state.session) return;
  const id = state.session.id;
  const want = el.replyMode.value;
  el.replyMode.disabled = true;
  try {
    const s = await api('PATCH', `/sessions/${encodeURIComponent(id)}`, { reply_mode: want });
    if (state.session && state.session.id === id && s && s.reply_mode) el.replyMode.value = s.reply_mode;
  } catch (e) {
    if (state.session && state.session.id === id) el.replyMode.value = state.replyMode;
    if (e.status !== 401) toast(`Could not change the assistant's replies: ${e.message}`);
  } finally {
    el.replyMode.disabled = !state.session || !state.joined;
  }
});

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
  state.members.clear();
  renderPeople();
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
  setReplyMode(data.reply_mode || 'always');
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
  const msg = { type: 'join_session', session_id: state.session.id, since: state.lastId };
  if (state.name && !state.nameRefused) msg.name = state.name; // SPEC 9: our display name
  conn.send(msg);
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

// One message: .meta holds .who (the author's name), "(you)" on our own, the time and
// a .state while it is not acknowledged. Text only: never HTML.
function messageItem(m, label, mine) {
  const li = document.createElement('li');
  li.className = `msg role-${m.role}`;
  li.dataset.role = m.role;
  const meta = document.createElement('div');
  meta.className = 'meta';
  const w = document.createElement('span');
  w.className = 'who';
  w.textContent = label;
  meta.append(w);
  if (mine) {
    li.classList.add('mine');
    const you = document.createElement('span');
    you.className = 'you';
    you.textContent = '(you)';
    meta.append(you);
  }
  const t = document.createElement('time');
  if (m.created_at) {
    t.dateTime = m.created_at;
    t.textContent = timeText(m.created_at);
  }
  meta.append(t);
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
    li.querySelector('.who').textContent = who(m);
    setMsgState(li, '');
    const t = li.querySelector('time');
    t.dateTime = m.created_at;
    t.textContent = timeText(m.created_at);
  } else {
    li = messageItem(m, who(m), isMine(m));
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
  updateRegen();
  return li;
}

// The state of one of our messages not acknowledged yet: 'sending', 'waiting for the
// connection', 'not sent', or '' (none).
function setMsgState(li, text) {
  let span = li.querySelector('.meta .state');
  if (!text) { if (span) span.remove(); return; }
  if (!span) {
    span = document.createElement('span');
    span.className = 'state';
    li.querySelector('.meta time').before(span);
  }
  span.textContent = text;
}

// ---------------------------------------------------------------- regenerate

// The Regenerate button sits on the last message when it is a finished assistant reply
// (regenerate answers the session's last user message again, SPEC 9).
function updateRegen() {
  const last = [...el.messages.querySelectorAll('li.msg')].pop();
  for (const b of el.messages.querySelectorAll('button.regen')) {
    if (!last || b.closest('li') !== last) b.remove();
  }
  if (!last || last.dataset.role !== 'assistant' || !last.dataset.id || state.streams.size > 0 ||
      last.classList.contains('superseded') || !state.session) return;
  if (last.querySelector('button.regen')) return;
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'btn small regen';
  b.textContent = 'Regenerate';
  b.setAttribute('aria-label', 'Regenerate this reply');
  b.addEventListener('click', () => {
    if (!state.session) return;
    if (!(state.joined && conn.send({ type: 'regenerate', session_id: state.session.id }))) {
      toast('Not connected: the reply cannot be regenerated now.');
      return;
    }
    b.disabled = true;
    b.textContent = 'Regenerating…';
  });
  last.querySelector('.meta').append(b);
}

// A regenerate was refused: the button can be pressed again.
function updateRegenAfterError() {
  for (const b of el.messages.querySelectorAll('button.regen')) b.remove();
  updateRegen();
}

// Reply message_id was superseded: it is marked, and the next reply takes its place.
function superseded(messageId) {
  const li = state.shown.get(messageId);
  if (!li) return;
  state.shown.delete(messageId);
  li.classList.add('superseded');
  li.removeAttribute('data-id');
  const b = li.querySelector('button.regen');
  if (b) b.remove();
  const tag = document.createElement('span');
  tag.className = 'tag';
  tag.textContent = 'superseded';
  li.querySelector('.meta').append(tag);
  if (state.replacing && state.replacing.isConnected) state.replacing.remove();
  state.replacing = li;
  updateRegen();
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
    if (state.replacing && state.replacing.isConnected) state.replacing.replaceWith(li); // regenerate
    else el.messages.append(li);
    state.replacing = null;
    s = { li, body: li.querySelector('.body'), text: '', chunks: 0 };
    state.streams.set(rid, s);
    updateStop();
    updateRegen();
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
  updateRegen();
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
  if (ev.key === 'Escape' && !el.keyDialog.open && !el.confirmDialog.open && !el.nameDialog.open && state.streams.size) {
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
  const names = [...state.typers.values()].map((t) => t.name);
  if (n === 1) setActivity(`${names[0]} is typing…`, 'typing');
  else if (n === 2) setActivity(`${names[0]} and ${names[1]} are typing…`, 'typing');
  else setActivity(`${n} people are typing…`, 'typing');
}

function remoteTyping(connectionId, typing, name) {
  const was = state.typers.get(connectionId);
  if (was) clearTimeout(was.timer);
  if (typing) {
    state.typers.set(connectionId, {
      name: nameOf(connectionId, name),
      timer: setTimeout(() => { state.typers.delete(connectionId); renderTyping(); }, REMOTE_TYPING_TTL_MS),
    });
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
  const li = messageItem({ role: 'user', content: text }, myName(), true);
  li.classList.add('pending');
  setMsgState(li, 'sending');
  li.dataset.clientMsgId = cid;
  el.messages.append(li);
  updateRegen();
  state.pending.set(cid, { li, text, session: state.session.id });
  if (!(state.joined && sendChat(text, cid))) {
    li.classList.add('queued');
    setMsgState(li, 'waiting for the connection');
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
      setMsgState(p.li, 'sending');
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
  state.members.clear();
  renderPeople();
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
      if (typeof m.connection_id === 'string') rememberConnection(m.connection_id);
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
      state.members.clear();
      for (const p of Array.isArray(m.members) ? m.members : []) {
        if (p && typeof p.connection_id === 'string') state.members.set(p.connection_id, nameOf(p.connection_id, p.name));
      }
      renderPeople();
      showName();
      if (m.reply_mode) setReplyMode(m.reply_mode);
      setSessionHeader();
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
      for (const t of state.typers.values()) clearTimeout(t.timer);
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
      else if (m.message.author && m.message.author.connection_id) remoteTyping(m.message.author.connection_id, false);
      scrollDown(m.message.client_msg_id && state.mine.has(m.message.client_msg_id));
      scheduleRefresh();
      break;
    case 'user_typing':
      remoteTyping(m.connection_id, m.typing, m.name);
      break;
    case 'user_joined': {
      setClients(m.clients);
      const name = nameOf(m.connection_id, m.name);
      state.members.set(m.connection_id, name);
      renderPeople();
      notice(`${name} joined`);
      scheduleRefresh();
      break;
    }
    case 'user_left': {
      setClients(m.clients);
      const name = nameOf(m.connection_id, m.name);
      state.members.delete(m.connection_id);
      renderPeople();
      remoteTyping(m.connection_id, false);
      notice(`${name} left`);
      scheduleRefresh();
      break;
    }
    case 'presence': { // a burst of joins and leaves, told together
      setClients(m.clients);
      const names = m.names && typeof m.names === 'object' ? m.names : {};
      const joined = (Array.isArray(m.joined) ? m.joined : []).map((id) => {
        const name = nameOf(id, names[id]);
        state.members.set(id, name);
        return name;
      });
      const left = (Array.isArray(m.left) ? m.left : []).map((id) => {
        const name = nameOf(id, names[id]);
        state.members.delete(id);
        remoteTyping(id, false);
        return name;
      });
      renderPeople();
      const parts = [];
      if (joined.length) parts.push(joined.length <= 3 ? `${listNames(joined)} joined` : `${joined.length} people joined`);
      if (left.length) parts.push(left.length <= 3 ? `${listNames(left)} left` : `${left.length} people left`);
      if (parts.length) notice(parts.join('; '));
      scheduleRefresh();
      break;
    }
    case 'session_changed': // PATCH /sessions/{id} by anyone (SPEC 9)
      if (typeof m.title === 'string' || m.title === null) {
        state.session.title = m.title || '';
        setSessionHeader();
      }
      if (m.reply_mode && m.reply_mode !== state.replyMode) {
        setReplyMode(m.reply_mode);
        if (MODE_TEXT[m.reply_mode]) notice(MODE_TEXT[m.reply_mode]);
      }
      scheduleRefresh();
      break;
    case 'message_superseded':
      superseded(m.message_id);
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
  if (m.code === 'invalid_field' && ['join_session', 'create_session'].includes(m.request_type) &&
      /'name'/.test(m.message || '') && state.name && !state.nameRefused) {
    nameRefused(m);
    return;
  }
  if (m.client_msg_id && state.pending.has(m.client_msg_id)) {
    // a chat refused (quota_exceeded, ...): nothing was stored, it is not sent again
    const p = state.pending.get(m.client_msg_id);
    state.pending.delete(m.client_msg_id);
    p.li.classList.remove('pending', 'queued');
    p.li.classList.add('failed');
    p.li.dataset.code = m.code || '';
    setMsgState(p.li, 'not sent');
    const why = document.createElement('p');
    why.className = 'msg-error';
    why.textContent = m.message || m.code;
    p.li.append(why);
  }
  if (m.request_type === 'regenerate') updateRegenAfterError();
  toast(`${m.message || m.code}`);
}

// ---------------------------------------------------------------- start

async function start() {
  loadName();
  loadConnections();
  showName();
  if (!state.name) { // the first visit: ask for a name once (it is remembered)
    await new Promise((resolve) => { nameResolve = resolve; askForName(''); });
  }
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
