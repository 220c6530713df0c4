// Browser test of the web demo (/demo) and the API docs (/docs): headless Chromium
// (Debian's /usr/bin/chromium) driven by playwright-core. Started by
// tests/scenarios/80_web_demo.py, which runs parley-rest and parley-broker and passes:
//   PARLEY_REST_URL, PARLEY_WS_URL, PARLEY_TEST_DB, PARLEY_TEST_NOTIFY_SOCKET,
//   PARLEY_TEST_OUTPUT (screenshots), PARLEY_BIN_DIR.
// Prints `ok - NAME` / `not ok - NAME: detail`; asks the wrapper to stop and start the
// broker with `@@ stop-broker` / `@@ start-broker` and reads its answer from stdin.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import {
  REST, WS, OUT, UI_WAIT, ok, eq, diag, step, control, rest, watchSockets, text, attr, waitFor, shown,
  recordStreams, streamTexts, echoChunks, prefixes, giveName, main,
} from './lib.mjs';

// ---------------------------------------------------------------- the test

async function run(browser) {
  // the reconnect schedule of www/parley-conn.js (the module runs in node as well)
  const { backoffDelay } = await import('../../www/parley-conn.js');
  eq('backoff: 1 s doubling to 30 s (no jitter)', [1, 2, 3, 4, 5, 6, 7, 20].map((n) => backoffDelay(n, () => 0.5)),
    [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  eq('backoff: jitter is -20 % .. +20 %, never above 30 s', [1, 5, 6].flatMap((n) => [backoffDelay(n, () => 0), backoffDelay(n, () => 0.999999)]),
    [800, 1200, 12800, 19200, 24000, 30000]);

  const root = await rest('GET', '/');
  eq('GET / ws_url names the test broker', root.body && root.body.ws_url, WS);

  const ctxA = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const ctxB = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const A = await ctxA.newPage();
  const B = await ctxB.newPage();
  const errors = [];
  const failedLoads = [];
  for (const [n, p] of [['A', A], ['B', B]]) {
    p.on('pageerror', (e) => errors.push(`${n}: ${e.message}`));
    p.on('console', (m) => { if (m.type() === 'error') diag(`console ${n}: ${m.text()}`); });
    p.on('response', (r) => { if (r.status() >= 400) failedLoads.push(`${n}: ${r.status()} ${r.request().method()} ${r.url()}`); });
  }
  const sockA = watchSockets(A);
  const sockB = watchSockets(B);

  // ---- load, connect, latency
  await step('load /demo', async () => {
    const r = await A.goto(`${REST}/demo`);
    eq('GET /demo status', r.status(), 200);
    eq('page title', await A.title(), 'Parley demo');
    await giveName(A, 'Ann');
    ok('page A connects (status open)', await waitFor(A, () => document.getElementById('conn').dataset.state === 'open', null, 'A open'));
    ok('the latency from ping/pong is shown', await waitFor(A, () => /^· \d+ ms$/.test(document.getElementById('latency').textContent), null, 'latency'),
      await text(A, '#latency'));
    eq('status text', await text(A, '#conn-text'), 'Connected');
    eq('the page opened the ws_url from GET /', sockA.urls, [WS]);
    eq('the first frame sent is a ping', sockA.sent[0], { type: 'ping' });
  });

  // ---- create a session on A, open it on B
  let sid = null;
  await step('create and join', async () => {
    await A.fill('#new-title', 'web test');
    await A.click('#create-button');
    ok('A opens the new session', await waitFor(A, () => /^#[0-9a-f]{16}$/.test(location.hash) && document.getElementById('chat-title').textContent === 'web test', null, 'A title'));
    sid = (await A.evaluate(() => location.hash)).slice(1);
    const got = await rest('GET', `/sessions/${sid}`);
    eq('REST has the session with its title', [got.status, got.body && got.body.title], [200, 'web test']);
    ok('A joined over the WebSocket', await waitFor(A, (s) => document.querySelector('#presence').dataset.clients === '1', sid, 'A clients 1'));
    const join = sockA.sent.find((f) => f.type === 'join_session');
    eq('A joins with since = 0 (empty history) and its name', join, { type: 'join_session', session_id: sid, since: 0, name: 'Ann' });

    await B.goto(`${REST}/demo`);
    await giveName(B, 'Bob');
    ok('page B connects', await waitFor(B, () => document.getElementById('conn').dataset.state === 'open', null, 'B open'));
    ok('B lists the session (REST GET /sessions)', await waitFor(B, (s) => !!document.querySelector(`#session-list [data-session-id="${s}"]`), sid, 'B list'));
    eq('B list item: title', await text(B, `#session-list [data-session-id="${sid}"] .session-title`), 'web test');
    await B.click(`#session-list [data-session-id="${sid}"]`);
    ok('B opens it', await waitFor(B, () => document.getElementById('chat-title').textContent === 'web test', null, 'B title'));
    ok('presence on B: 2 people', await waitFor(B, () => document.getElementById('presence').dataset.clients === '2', null, 'B clients 2'));
    ok('presence on A: 2 people (user_joined)', await waitFor(A, () => document.getElementById('presence').dataset.clients === '2', null, 'A clients 2'));
    eq('presence text on A', await text(A, '#presence'), '2 people here');
    ok('A shows that Bob joined', await waitFor(A, () => [...document.querySelectorAll('#messages .notice')].some((n) => n.textContent === 'Bob joined'), null, 'joined notice'));
    ok('the session list on A shows 2 clients (live figure)', await waitFor(A, (s) => document.querySelector(`#session-list [data-session-id="${s}"]`)?.dataset.clients === '2', sid, 'list clients 2'));
    eq('B is marked current in its list', await attr(B, `#session-list [data-session-id="${sid}"]`, 'aria-current'), 'true');
  });

  // ---- a message from A appears in both; the echo reply streams into both
  const MSG = 'hello from the web demo test';
  await step('chat and streamed reply', async () => {
    await recordStreams(A);
    await recordStreams(B);
    await A.focus('#message-input');
    await A.keyboard.type(MSG);
    await A.keyboard.press('Enter');
    eq('the message box is emptied on send', await A.inputValue('#message-input'), '');
    for (const [n, p] of [['A', A], ['B', B]]) {
      ok(`${n} shows the user message`, await waitFor(p, (m) => [...document.querySelectorAll('#messages li.msg[data-role="user"] .body')].some((b) => b.textContent === m), MSG, `${n} user msg`));
      ok(`${n} shows the finished reply`, await waitFor(p, () => document.querySelectorAll('#messages li.msg[data-role="assistant"]:not(.streaming)').length === 1, null, `${n} reply`));
      eq(`${n}: user messages`, await shown(p, 'user'), [MSG]);
      eq(`${n}: the reply's final text equals the message (echo)`, await shown(p, 'assistant'), [MSG]);
      eq(`${n}: the reply streamed chunk by chunk`, await streamTexts(p), prefixes(echoChunks(MSG)));
      eq(`${n}: chunks counted (words + the final empty one)`, await attr(p, '#messages li.msg[data-role="assistant"]', 'data-chunks'),
        String(echoChunks(MSG).length + 1));
    }
    eq('A labels its own message with its name and (you)', [await text(A, '#messages li.msg[data-role="user"] .who'),
      await text(A, '#messages li.msg[data-role="user"] .you')], ['Ann', '(you)']);
    eq('B labels it with the author\'s name, not as its own', [await text(B, '#messages li.msg[data-role="user"] .who'),
      await B.locator('#messages li.msg[data-role="user"] .you').count()], ['Ann', 0]);
    const h = await rest('GET', `/sessions/${sid}`);
    const ids = h.body.messages.map((m) => String(m.id));
    eq('REST history: the message and the reply', h.body.messages.map((m) => [m.role, m.content]), [['user', MSG], ['assistant', MSG]]);
    eq('A shows the stored ids', await A.$$eval('#messages li.msg', (els) => els.map((e) => e.dataset.id)), ids);
    eq('B shows the stored ids', await B.$$eval('#messages li.msg', (els) => els.map((e) => e.dataset.id)), ids);
    const chat = sockA.sent.find((f) => f.type === 'chat');
    ok('A sent chat with a client_msg_id', chat && chat.message === MSG && chat.session_id === sid && typeof chat.client_msg_id === 'string' && chat.client_msg_id.length > 0,
      JSON.stringify(chat));
    eq('the Stop button is hidden when nothing streams', await A.isHidden('#stop-button'), true);
  });

  // ---- typing indicators, both ways
  await step('typing', async () => {
    const before = sockA.sent.length;
    await A.focus('#message-input');
    await A.keyboard.type('abc');
    ok('B sees that A is typing', await waitFor(B, () => document.getElementById('activity').dataset.typing === '1', null, 'B typing 1'));
    eq('B: indicator text names A', await text(B, '#activity'), 'Ann is typing…');
    eq('A does not show its own typing', await attr(A, '#activity', 'data-typing'), '0');
    eq('A sent typing_start once for the three keys', sockA.sent.slice(before).filter((f) => f.type === 'typing_start'),
      [{ type: 'typing_start', session_id: sid }]);
    const t0 = Date.now();
    ok('B: the indicator goes after A is idle 3 s (typing_stop)', await waitFor(B, () => document.getElementById('activity').dataset.typing === '0', null, 'B typing 0'));
    ok('not before 3 s of idleness', Date.now() - t0 >= 2000, `${Date.now() - t0} ms`);
    eq('A sent typing_stop', sockA.sent.slice(before).filter((f) => f.type.startsWith('typing')).map((f) => f.type), ['typing_start', 'typing_stop']);
    await A.fill('#message-input', '');

    const beforeB = sockB.sent.length;
    await B.focus('#message-input');
    await B.keyboard.type('xy');
    ok('A sees that B is typing', await waitFor(A, () => document.getElementById('activity').dataset.typing === '1', null, 'A typing 1'));
    await B.keyboard.type('z');
    await B.keyboard.press('Enter');
    ok('A: the indicator goes when B sends', await waitFor(A, () => document.getElementById('activity').dataset.typing === '0', null, 'A typing 0'));
    eq('B sent typing_start, typing_stop, then the chat',
      sockB.sent.slice(beforeB).filter((f) => f.type !== 'ping').map((f) => f.type).slice(0, 3), ['typing_start', 'typing_stop', 'chat']);
    for (const [n, p] of [['A', A], ['B', B]]) {
      ok(`${n} shows B's message and its reply`, await waitFor(p, () => document.querySelectorAll('#messages li.msg[data-role="assistant"]:not(.streaming)').length === 2, null, `${n} 2 replies`));
      eq(`${n}: replies`, await shown(p, 'assistant'), [MSG, 'xyz']);
    }
  });

  // ---- Stop while a reply streams (Escape on A)
  const LONG = Array.from({ length: 150 }, (_, i) => `word${i + 1}`).join(' ');
  await step('stop', async () => {
    await A.fill('#message-input', LONG);
    await A.keyboard.press('Enter');
    ok('the Stop button shows on A while the reply streams', await waitFor(A, () => !document.getElementById('stop-button').hidden, null, 'A stop visible'));
    ok('and on B', await waitFor(B, () => !document.getElementById('stop-button').hidden, null, 'B stop visible'));
    await A.keyboard.press('Escape');
    for (const [n, p] of [['A', A], ['B', B]]) {
      ok(`${n}: the reply ends as stopped`, await waitFor(p, () => !!document.querySelector('#messages li.msg.role-assistant.stopped:not(.streaming)'), null, `${n} stopped`));
      const got = await text(p, '#messages li.msg.role-assistant.stopped .body');
      ok(`${n}: the stopped reply is a strict prefix of the message`, got.length > 0 && got.length < LONG.length && LONG.startsWith(got),
        `${got.length} chars: ${got.slice(-40)}`);
      eq(`${n}: the Stop button is hidden again`, await p.isHidden('#stop-button'), true);
      eq(`${n}: the reply is tagged stopped`, await text(p, '#messages li.msg.role-assistant.stopped .tag'), 'stopped');
    }
    eq('A sent stop for the session', sockA.sent.filter((f) => f.type === 'stop'), [{ type: 'stop', session_id: sid }]);
    const h = await rest('GET', `/sessions/${sid}`);
    eq('the stored partial reply is what the pages show', h.body.messages.at(-1).content, await text(A, '#messages li.msg.role-assistant.stopped .body'));
  });

  // ---- the broker restarts; the pages reconnect and catch up with since
  await step('broker restart', async () => {
    const h = await rest('GET', `/sessions/${sid}`);
    const lastId = h.body.messages.at(-1).id;
    const sentA = sockA.sent.length;
    const sentB = sockB.sent.length;
    eq('the broker stops (exit status)', await control('stop-broker'), 'stopped 0');
    for (const [n, p] of [['A', A], ['B', B]]) {
      ok(`${n} shows that it is disconnected and retrying`, await waitFor(p, () => ['waiting', 'connecting'].includes(document.getElementById('conn').dataset.state) && /^(Disconnected · reconnecting in \d+ s|Reconnecting \(attempt \d+\)…)$/.test(document.getElementById('conn-text').textContent), null, `${n} waiting`),
        await text(p, '#conn-text'));
    }
    const r1 = await rest('POST', `/sessions/${sid}/messages`, { content: 'sent through REST while the broker was down' });
    const r2 = await rest('POST', `/sessions/${sid}/messages`, { content: 'and a second one' });
    eq('REST stores the messages meanwhile', [r1.status, r2.status], [201, 201]);
    // a message typed on A while offline waits and is sent after the reconnect
    await A.fill('#message-input', 'typed while offline');
    await A.keyboard.press('Enter');
    eq('A shows it as waiting for the connection', [await text(A, '#messages li.msg.queued .who'), await text(A, '#messages li.msg.queued .state')],
      ['Ann', 'waiting for the connection']);
    eq('the broker starts again', await control('start-broker'), 'started');
    for (const [n, p] of [['A', A], ['B', B]]) {
      ok(`${n} reconnects`, await waitFor(p, () => document.getElementById('conn').dataset.state === 'open', null, `${n} reopen`), await text(p, '#conn-text'));
      ok(`${n} shows the messages sent meanwhile`, await waitFor(p, () => {
        const t = [...document.querySelectorAll('#messages li.msg[data-role="user"] .body')].map((b) => b.textContent);
        return t.includes('sent through REST while the broker was down') && t.includes('and a second one');
      }, null, `${n} replay`));
    }
    const joinA = sockA.sent.slice(sentA).find((f) => f.type === 'join_session');
    const joinB = sockB.sent.slice(sentB).find((f) => f.type === 'join_session');
    eq('A rejoins with since = the last message id it had', joinA, { type: 'join_session', session_id: sid, since: lastId, name: 'Ann' });
    eq('B rejoins with since = the last message id it had', joinB, { type: 'join_session', session_id: sid, since: lastId, name: 'Bob' });
    eq('a REST message is labelled API', await B.locator('#messages li.msg[data-id="' + r1.body.id + '"] .who').textContent(), 'API');
    for (const [n, p] of [['A', A], ['B', B]]) {
      ok(`${n}: the offline message is delivered and answered`, await waitFor(p, () => [...document.querySelectorAll('#messages li.msg[data-role="assistant"]:not(.streaming) .body')].some((b) => b.textContent === 'typed while offline'), null, `${n} offline reply`));
    }
    ok('after the restart the session list shows 2 clients again (live figure)',
      await waitFor(A, (s) => document.querySelector(`#session-list [data-session-id="${s}"]`)?.dataset.clients === '2', sid, 'list clients 2 after restart'),
      await attr(A, `#session-list [data-session-id="${sid}"]`, 'data-clients'));
    eq('A: the offline message is acknowledged', await A.locator('#messages li.msg.queued, #messages li.msg.pending').count(), 0);
    const hist = await rest('GET', `/sessions/${sid}`);
    const userMsgs = hist.body.messages.filter((m) => m.role === 'user').map((m) => m.content);
    eq('REST history has every user message once', userMsgs, [MSG, 'xyz', LONG, 'sent through REST while the broker was down', 'and a second one', 'typed while offline']);
    const want = hist.body.messages.map((m) => String(m.id));
    eq('A shows exactly the stored history, in order', await A.$$eval('#messages li.msg', (els) => els.map((e) => e.dataset.id)), want);
    eq('B shows exactly the stored history, in order', await B.$$eval('#messages li.msg', (els) => els.map((e) => e.dataset.id)), want);
  });

  // ---- screenshots: light and dark, desktop and phone
  await step('screenshots', async () => {
    await A.fill('#message-input', '');
    await B.focus('#message-input');
    await B.keyboard.type('typing…');  // A shows the typing indicator in the pictures
    await waitFor(A, () => document.getElementById('activity').dataset.typing === '1', null, 'typing for screenshot');
    for (const scheme of ['light', 'dark']) {
      await A.emulateMedia({ colorScheme: scheme });
      ok(`prefers-color-scheme ${scheme} sets the theme`, await waitFor(A, (s) => document.documentElement.dataset.theme === s, scheme, `theme ${scheme}`),
        await attr(A, 'html', 'data-theme'));
      for (const [size, vp] of [['desktop', { width: 1280, height: 800 }], ['phone', { width: 390, height: 844 }]]) {
        await A.setViewportSize(vp);
        await A.waitForTimeout(200);
        const file = path.join(OUT, `demo-${scheme}-${size}.png`);
        await A.screenshot({ path: file, fullPage: size === 'phone' });
        diag(`screenshot ${file}`);
        if (size === 'phone') {
          const overflow = await A.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
          eq(`phone width (${scheme}): nothing wider than the screen`, overflow, 0);
        }
      }
    }
    await A.setViewportSize({ width: 1280, height: 800 });
    await A.emulateMedia({ colorScheme: 'light' });
    await A.click('#theme-toggle');
    eq('the toggle switches to dark', [await attr(A, 'html', 'data-theme'), await attr(A, '#theme-toggle', 'aria-pressed')], ['dark', 'true']);
    await A.click('#theme-toggle');
    eq('and back to light', [await attr(A, 'html', 'data-theme'), await attr(A, '#theme-toggle', 'aria-pressed')], ['light', 'false']);
    await B.fill('#message-input', '');
  });

  // ---- keyboard and labels
  await step('accessibility basics', async () => {
    const unlabelled = await A.$$eval('input, textarea, select', (els) => els.filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map((e) => e.id));
    eq('every field has a label', unlabelled, []);
    eq('the page declares a viewport', await attr(A, 'meta[name="viewport"]', 'content'), 'width=device-width, initial-scale=1');
    eq('the conversation is a live log', [await attr(A, '#messages', 'role'), await attr(A, '#messages', 'aria-live')], ['log', 'polite']);
  });

  // ---- clear through the page reaches the other page
  await step('clear', async () => {
    await A.click('#clear-button');
    ok('a confirm dialog opens', await waitFor(A, () => document.getElementById('confirm-dialog').open, null, 'dialog'));
    await A.click('#confirm-ok');
    for (const [n, p] of [['A', A], ['B', B]]) {
      ok(`${n}: the conversation is emptied`, await waitFor(p, () => document.querySelectorAll('#messages li.msg').length === 0 && [...document.querySelectorAll('#messages .notice')].some((x) => x.textContent === 'The history was cleared.'), null, `${n} cleared`));
    }
    const h = await rest('GET', `/sessions/${sid}`);
    eq('REST: no messages left', [h.body.message_count, h.body.messages.length], [0, 0]);
  });

  // ---- delete through the page reaches the other page
  await step('delete', async () => {
    await B.click('#delete-button');
    ok('a confirm dialog opens on B', await waitFor(B, () => document.getElementById('confirm-dialog').open, null, 'dialog B'));
    await B.click('#confirm-ok');
    ok('A is told the session was deleted', await waitFor(A, () => !!document.querySelector('#messages .deleted-notice'), null, 'A deleted'));
    eq('A: the notice', await text(A, '#messages .deleted-notice'), 'This session was deleted.');
    eq('A: no session open', await text(A, '#chat-title'), 'No session open');
    eq('B: its own notice', await text(B, '#messages .deleted-notice'), 'You deleted this session.');
    for (const [n, p] of [['A', A], ['B', B]]) {
      ok(`${n}: the session leaves the list`, await waitFor(p, (s) => !document.querySelector(`#session-list [data-session-id="${s}"]`), sid, `${n} list`));
      eq(`${n}: the composer is disabled`, await p.isDisabled('#message-input'), true);
    }
    eq('REST: the session is gone', (await rest('GET', `/sessions/${sid}`)).status, 404);
  });

  eq('no script errors on the pages', errors, []);
  eq('no request of the pages failed', failedLoads, []);

  // ---- /docs: Swagger UI, "Try it out" on GET /health
  await step('docs', async () => {
    const D = await ctxA.newPage();
    D.on('pageerror', (e) => errors.push(`docs: ${e.message}`));
    const r = await D.goto(`${REST}/docs`);
    eq('GET /docs status', r.status(), 200);
    await D.waitForSelector('#operations-meta-getHealth', { timeout: UI_WAIT });
    const spec = JSON.parse((await rest('GET', '/openapi.json')).text);
    const nOps = Object.values(spec.paths).reduce((n, p) => n + Object.keys(p).length, 0);
    eq('Swagger UI shows every operation', await D.locator('.opblock').count(), nOps);
    await D.click('#operations-meta-getHealth .opblock-summary');
    await D.click('#operations-meta-getHealth button.try-out__btn', { timeout: UI_WAIT });
    await D.click('#operations-meta-getHealth button.execute', { timeout: UI_WAIT });
    const status = D.locator('#operations-meta-getHealth .live-responses-table tr.response .response-col_status').first();
    await status.waitFor({ timeout: UI_WAIT });
    eq('Try it out on GET /health answers 200', (await status.textContent()).trim(), '200');
    const body = await D.locator('#operations-meta-getHealth .live-responses-table tr.response .response-col_description pre').first().textContent();
    let parsed = null;
    try { parsed = JSON.parse(body); } catch { /* reported below */ }
    eq('the answer is the health document', parsed && [parsed.status, parsed.database, parsed.broker.up], ['healthy', 'ok', true]);
    await D.screenshot({ path: path.join(OUT, 'docs-desktop.png') });
    await D.close();
  });

  // ---- an API key: the page asks for it, keeps it in sessionStorage, uses it for both
  await step('api key', async () => {
    const key = execFileSync(path.join(process.env.PARLEY_BIN_DIR, 'parley-rest'),
      ['--db', process.env.PARLEY_TEST_DB, '--notify-socket', process.env.PARLEY_TEST_NOTIFY_SOCKET, 'keys', 'add', 'webtest'],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    ok('a key was made', /^pk_[0-9a-f]{40}$/.test(key), key);
    eq('REST now needs it', (await rest('GET', '/sessions')).status, 401);
    const ctxK = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const K = await ctxK.newPage();
    const sockK = watchSockets(K);
    K.on('pageerror', (e) => errors.push(`K: ${e.message}`));
    await K.goto(`${REST}/demo`);
    ok('a first visit asks for a name', await waitFor(K, () => document.getElementById('name-dialog').open, null, 'K name dialog'));
    await K.click('#name-cancel'); // no name: the server's default, the key's name
    ok('the page asks for a key', await waitFor(K, () => document.getElementById('key-dialog').open, null, 'key dialog'));
    await K.fill('#key-input', key);
    await K.keyboard.press('Enter');
    ok('with the key the session list loads', await waitFor(K, () => document.getElementById('sessions-error').hidden && !document.getElementById('key-dialog').open && document.getElementById('sessions-total').textContent !== '', null, 'K sessions'));
    ok('and the WebSocket connects', await waitFor(K, () => document.getElementById('conn').dataset.state === 'open' && document.getElementById('conn-text').textContent === 'Connected', null, 'K open'));
    eq('the WebSocket URL carries api_key', sockK.urls.at(-1), `${WS}?api_key=${key}`);
    eq('the key is in sessionStorage', await K.evaluate(() => sessionStorage.getItem('parley.apiKey')), key);
    eq('and not in localStorage', await K.evaluate((kk) => Object.keys(localStorage).filter((k) => localStorage.getItem(k) === kk), key), []);
    await K.fill('#new-title', 'with a key');
    await K.click('#create-button');
    ok('creating a session works with the key', await waitFor(K, () => document.getElementById('chat-title').textContent === 'with a key' && document.getElementById('presence').dataset.clients === '1', null, 'K create'));
    eq('without a name given, the key\'s name is ours (session_joined.members)', await K.$$eval('#people .person', (els) => els.map((e) => e.textContent)), ['webtest (you)']);
    eq('and the name control offers to choose one', await text(K, '#name-button'), 'Choose a name');
    await ctxK.close();
  });
  eq('no script errors on the docs and key pages', errors, []);
  await ctxA.close();
  await ctxB.close();
}

main(run);
