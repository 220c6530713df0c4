// Browser test of the web demo's room features (SPEC 9), started by
// tests/scenarios/82_web_room.py (see tests/lib/web_support.py for the environment):
// the name asked for once and kept after a reload, a 65-character name refused in the
// page, two pages with their names on messages, in the list of who is here and in the
// typing indicator, the reply-mode switch (the other page's follows; `mention` answers
// only @assistant), the Regenerate button replacing the last reply, a refused regenerate
// shown, a new name through the Name control, and a chat over its API key's quota
// shown with the server's message.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import {
  REST, ok, eq, diag, step, rest, watchSockets, text, waitFor, shown, giveName, main,
} from './lib.mjs';

const ANN = 'Ann Lee';
const BOB = 'Bob ✓'; // not ASCII
const BUSY = 'the assistant is replying in this session; wait for its reply to complete (or send stop), then regenerate';

const people = (p) => p.$$eval('#people .person', (els) => els.map((e) => e.textContent));
const replies = (p) => p.locator('#messages li.msg[data-role="assistant"]:not(.streaming)').count();
const modeOf = (p) => p.$eval('#reply-mode', (s) => s.value);

async function send(p, msg) {
  await p.fill('#message-input', msg);
  await p.keyboard.press('Enter');
}

// Waits until page p shows n finished replies and nothing streams.
function repliesAre(p, n, what) {
  return waitFor(p, (k) => document.querySelectorAll('#messages li.msg[data-role="assistant"]:not(.streaming)').length === k &&
    !document.querySelector('#messages li.streaming'), n, what);
}

async function run(browser) {
  const ctxA = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const ctxB = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const A = await ctxA.newPage();
  const B = await ctxB.newPage();
  const errors = [];
  for (const [n, p] of [['A', A], ['B', B]]) {
    p.on('pageerror', (e) => errors.push(`${n}: ${e.message}`));
    p.on('console', (m) => { if (m.type() === 'error') diag(`console ${n}: ${m.text()}`); });
  }
  const sockA = watchSockets(A);
  const sockB = watchSockets(B);

  // ---- the name: asked for on the first visit, validated in the page, remembered
  await step('name prompt', async () => {
    await A.goto(`${REST}/demo`);
    ok('the first visit asks for a name', await waitFor(A, () => document.getElementById('name-dialog').open, null, 'name dialog'));
    eq('the name field is labelled', await text(A, 'label[for="name-input"]'), 'Display name');
    await A.fill('#name-input', 'x'.repeat(65));
    await A.keyboard.press('Enter');
    eq('a 65-character name is refused in the page', await text(A, '#name-error'), 'A name has at most 64 characters; this one has 65.');
    eq('the dialog stays open, the field marked invalid', [await A.evaluate(() => document.getElementById('name-dialog').open),
      await A.getAttribute('#name-input', 'aria-invalid')], [true, 'true']);
    eq('nothing is stored', await A.evaluate(() => localStorage.getItem('parley.name')), null);
    eq('nothing was sent to the server yet (no WebSocket)', sockA.urls, []);
    await A.fill('#name-input', 'tab\there');
    await A.click('#name-submit');
    eq('a control character is refused', await text(A, '#name-error'), 'A name cannot contain control characters (a line break, a tab, …).');
    await A.fill('#name-input', ` ${ANN} `);
    await A.keyboard.press('Enter');
    ok('a valid name closes the dialog', await waitFor(A, () => !document.getElementById('name-dialog').open, null, 'dialog closed'));
    eq('the name is kept in localStorage (trimmed)', await A.evaluate(() => localStorage.getItem('parley.name')), ANN);
    eq('the name control shows it', await text(A, '#name-button'), `Name: ${ANN}`);
    ok('the page connects', await waitFor(A, () => document.getElementById('conn').dataset.state === 'open', null, 'A open'));

    await A.reload();
    ok('after a reload the page connects', await waitFor(A, () => document.getElementById('conn').dataset.state === 'open', null, 'A open again'));
    eq('after a reload the name is not asked again', await A.evaluate(() => document.getElementById('name-dialog').open), false);
    eq('and is the same', await text(A, '#name-button'), `Name: ${ANN}`);
  });

  // ---- two pages in one session: names on messages, in who is here, typing
  let sid = null;
  await step('two names in a room', async () => {
    await A.fill('#new-title', 'room');
    await A.click('#create-button');
    ok('A opens the new session', await waitFor(A, () => document.getElementById('chat-title').textContent === 'room' && document.getElementById('presence').dataset.clients === '1', null, 'A joined'));
    sid = (await A.evaluate(() => location.hash)).slice(1);
    eq('A joins with its name', sockA.sent.filter((f) => f.type === 'join_session'), [{ type: 'join_session', session_id: sid, since: 0, name: ANN }]);
    eq('A: who is here', await people(A), [`${ANN} (you)`]);

    await B.goto(`${REST}/demo#${sid}`);
    await giveName(B, BOB);
    ok('B opens the session from the URL', await waitFor(B, () => document.getElementById('chat-title').textContent === 'room' && document.getElementById('presence').dataset.clients === '2', null, 'B joined'));
    eq('B: who is here (session_joined.members), itself first', await people(B), [`${BOB} (you)`, ANN]);
    ok('A: Bob is here (user_joined)', await waitFor(A, () => document.querySelectorAll('#people .person').length === 2, null, 'A people 2'));
    eq('A: who is here', await people(A), [`${ANN} (you)`, BOB]);
    eq('A: the join notice names Bob', await text(A, '#messages .notice'), `${BOB} joined`);

    await send(A, 'hello from Ann');
    ok('B shows Ann\'s message and its reply', await repliesAre(B, 1, 'B 1 reply'));
    await send(B, 'hello from Bob');
    for (const [n, p] of [['A', A], ['B', B]]) {
      ok(`${n} shows both messages and replies`, await repliesAre(p, 2, `${n} 2 replies`));
      eq(`${n}: user messages`, await shown(p, 'user'), ['hello from Ann', 'hello from Bob']);
      eq(`${n}: authors`, await p.$$eval('#messages li.msg[data-role="user"] .who', (els) => els.map((e) => e.textContent)), [ANN, BOB]);
      eq(`${n}: replies are the assistant's`, await p.$$eval('#messages li.msg[data-role="assistant"] .who', (els) => els.map((e) => e.textContent)), ['Assistant', 'Assistant']);
    }
    eq('A marks only its own message', await A.$$eval('#messages li.msg[data-role="user"]', (els) => els.map((e) => [e.classList.contains('mine'), e.querySelector('.you')?.textContent || ''])),
      [[true, '(you)'], [false, '']]);
    eq('B marks only its own message', await B.$$eval('#messages li.msg[data-role="user"]', (els) => els.map((e) => [e.classList.contains('mine'), e.querySelector('.you')?.textContent || ''])),
      [[false, ''], [true, '(you)']]);
    const h = await rest('GET', `/sessions/${sid}`);
    eq('REST history: the authors', h.body.messages.filter((m) => m.role === 'user').map((m) => m.author && m.author.name), [ANN, BOB]);

    await B.focus('#message-input');
    await B.keyboard.type('abc');
    ok('A: Bob is typing (by name)', await waitFor(A, () => document.getElementById('activity').dataset.typing === '1', null, 'A typing'));
    eq('A: the typing text', await text(A, '#activity'), `${BOB} is typing…`);
    await B.fill('#message-input', '');
    ok('A: the indicator goes', await waitFor(A, () => document.getElementById('activity').dataset.typing === '0', null, 'A typing 0'));
  });

  // ---- the reply-mode switch
  await step('reply mode', async () => {
    eq('both switches show the mode on join (always)', [await modeOf(A), await modeOf(B)], ['always', 'always']);
    eq('the switch is labelled', await text(A, 'label[for="reply-mode"]'), 'Assistant replies');
    await A.selectOption('#reply-mode', 'mention');
    ok('B\'s switch follows (session_changed)', await waitFor(B, () => document.getElementById('reply-mode').value === 'mention', null, 'B mention'));
    eq('A\'s switch says mention', await modeOf(A), 'mention');
    eq('REST: the session\'s reply_mode', (await rest('GET', `/sessions/${sid}`)).body.reply_mode, 'mention');
    for (const [n, p] of [['A', A], ['B', B]]) {
      ok(`${n} says what changed`, await waitFor(p, () => [...document.querySelectorAll('#messages .notice')].some((x) => x.textContent === 'The assistant now answers only messages that mention @assistant.'), null, `${n} notice`));
    }
    await send(B, 'no mention here');
    ok('A shows the message', await waitFor(A, () => [...document.querySelectorAll('#messages li.msg[data-role="user"] .body')].some((b) => b.textContent === 'no mention here'), null, 'A no mention'));
    await A.waitForTimeout(1500); // the echo assistant would have started within this
    eq('mention mode: no reply to a chat without @assistant', [await replies(A), await replies(B)], [2, 2]);
    await send(B, '@assistant please answer');
    for (const [n, p] of [['A', A], ['B', B]]) {
      ok(`${n}: a chat with @assistant is answered`, await repliesAre(p, 3, `${n} 3 replies`));
      eq(`${n}: the reply`, (await shown(p, 'assistant')).at(-1), '@assistant please answer');
    }
    const r = await rest('PATCH', `/sessions/${sid}`, { reply_mode: 'off' });
    eq('PATCH through REST by someone else', [r.status, r.body && r.body.reply_mode], [200, 'off']);
    for (const [n, p] of [['A', A], ['B', B]]) {
      ok(`${n}'s switch follows to off`, await waitFor(p, () => document.getElementById('reply-mode').value === 'off', null, `${n} off`));
    }
    await B.selectOption('#reply-mode', 'always');
    ok('A\'s switch follows B back to always', await waitFor(A, () => document.getElementById('reply-mode').value === 'always', null, 'A always'));
    eq('REST: always again', (await rest('GET', `/sessions/${sid}`)).body.reply_mode, 'always');
  });

  // ---- regenerate the last reply
  await step('regenerate', async () => {
    for (const [n, p] of [['A', A], ['B', B]]) {
      eq(`${n}: one Regenerate button, on the last reply`, await p.$$eval('#messages button.regen', (els) => els.map((b) => [b.textContent, b.closest('li') === [...document.querySelectorAll('#messages li.msg')].pop()])),
        [['Regenerate', true]]);
    }
    const before = (await rest('GET', `/sessions/${sid}`)).body.messages;
    const oldId = before.at(-1).id;
    await A.click('#messages button.regen');
    eq('A sent regenerate', sockA.sent.filter((f) => f.type === 'regenerate'), [{ type: 'regenerate', session_id: sid }]);
    for (const [n, p] of [['A', A], ['B', B]]) {
      ok(`${n}: the new reply takes the old one's place`, await waitFor(p, (old) => {
        const last = [...document.querySelectorAll('#messages li.msg')].pop();
        return !document.querySelector(`#messages li.msg[data-id="${old}"]`) && !document.querySelector('#messages li.superseded') &&
          last.dataset.role === 'assistant' && last.dataset.id && last.dataset.id !== String(old) && !last.classList.contains('streaming');
      }, oldId, `${n} replaced`));
      eq(`${n}: replies (the old one gone)`, await shown(p, 'assistant'), ['hello from Ann', 'hello from Bob', '@assistant please answer']);
    }
    const after = (await rest('GET', `/sessions/${sid}`)).body.messages;
    const newId = after.at(-1).id;
    ok('REST history: a new reply replaced the old', newId !== oldId && after.length === before.length, JSON.stringify([oldId, newId]));
    const all = (await rest('GET', `/sessions/${sid}?all=true`)).body.messages;
    eq('REST ?all=true: the old reply is superseded', all.find((m) => m.id === oldId)?.status, 'superseded');
    for (const [n, p] of [['A', A], ['B', B]]) {
      eq(`${n} shows exactly the stored history`, await p.$$eval('#messages li.msg', (els) => els.map((e) => Number(e.dataset.id))), after.map((m) => m.id));
      eq(`${n}: the button is on the new reply`, await p.$$eval('#messages button.regen', (els) => els.map((b) => b.closest('li').dataset.id)), [String(newId)]);
    }

    // both press Regenerate at once: one is answered, the other refused while it streams
    const LONG = Array.from({ length: 120 }, (_, i) => `w${i + 1}`).join(' ');
    await send(A, LONG);
    for (const [n, p] of [['A', A], ['B', B]]) ok(`${n}: the long reply is done`, await repliesAre(p, 4, `${n} 4 replies`));
    // each page's button is taken before either is pressed: the first press removes the
    // other page's button as soon as its message_superseded arrives, which under load can
    // come before the second press; a removed button still answers its click
    for (const p of [A, B]) await p.evaluate(() => { window.regenButton = document.querySelector('#messages button.regen'); });
    const clicked = [];
    for (const p of [A, B]) {
      clicked.push(await p.evaluate(() => {
        const b = window.regenButton;
        if (b) b.click();
        return Boolean(b);
      }));
    }
    eq('both pages pressed Regenerate', clicked, [true, true]);
    const busyShown = (p) => p.evaluate((want) => !document.getElementById('toast').hidden && document.getElementById('toast').textContent === want, BUSY);
    const refused = async () => (await busyShown(A) ? 1 : 0) + (await busyShown(B) ? 1 : 0);
    const deadline = Date.now() + 15000;
    while (Date.now() < deadline && (await refused()) === 0) await A.waitForTimeout(50);
    await A.waitForTimeout(300); // a second refusal would have come by now
    eq('exactly one page shows the refusal (unavailable), with the server\'s message', await refused(), 1);
    for (const [n, p] of [['A', A], ['B', B]]) {
      ok(`${n}: the regenerated reply completes`, await repliesAre(p, 4, `${n} 4 replies after regenerate`));
      eq(`${n}: its text`, (await shown(p, 'assistant')).at(-1), LONG);
      eq(`${n}: the button is back`, await p.locator('#messages button.regen').count(), 1);
    }
  });

  // ---- a new name through the Name control: the others see the change
  await step('rename', async () => {
    await B.click('#name-button');
    ok('the Name button opens the dialog with the current name', await waitFor(B, (n) => document.getElementById('name-dialog').open && document.getElementById('name-input').value === n, BOB, 'B dialog'));
    await B.fill('#name-input', 'Bobby');
    await B.keyboard.press('Enter');
    eq('B: the name control', await text(B, '#name-button'), 'Name: Bobby');
    ok('A: who is here follows', await waitFor(A, () => [...document.querySelectorAll('#people .person')].map((e) => e.textContent).join('|') === 'Ann Lee (you)|Bobby', null, 'A people Bobby'));
    ok('B: who is here', await waitFor(B, () => [...document.querySelectorAll('#people .person')].map((e) => e.textContent).join('|') === 'Bobby (you)|Ann Lee', null, 'B people Bobby'));
    eq('A: the notices', (await A.$$eval('#messages .notice', (els) => els.map((e) => e.textContent))).slice(-2), [`${BOB} left`, 'Bobby joined']);
    eq('B rejoined with the new name and the last id it had', sockB.sent.filter((f) => f.type === 'join_session').at(-1).name, 'Bobby');
    eq('B kept its conversation', await B.$$eval('#messages li.msg', (els) => els.map((e) => e.dataset.id)), await A.$$eval('#messages li.msg', (els) => els.map((e) => e.dataset.id)));
    await send(B, 'now as Bobby');
    ok('A: the new message carries the new name', await waitFor(A, () => [...document.querySelectorAll('#messages li.msg[data-role="user"]')].some((li) => li.querySelector('.body').textContent === 'now as Bobby' && li.querySelector('.who').textContent === 'Bobby'), null, 'A Bobby msg'));
    ok('B: and is marked as its own', await waitFor(B, () => [...document.querySelectorAll('#messages li.msg.mine[data-role="user"] .who')].some((w) => w.textContent === 'Bobby'), null, 'B Bobby mine'));
    eq('the older messages keep the name they were written with', (await A.$$eval('#messages li.msg[data-role="user"] .who', (els) => els.map((e) => e.textContent))).slice(0, 2), [ANN, BOB]);
    for (const [n, p] of [['A', A], ['B', B]]) ok(`${n}: its reply is done`, await repliesAre(p, 5, `${n} 5 replies`));
  });

  eq('no script errors on the pages', errors, []);

  // ---- a chat over its key's quota: the server's message, the message marked not sent
  await step('quota', async () => {
    const key = execFileSync(path.join(process.env.PARLEY_BIN_DIR, 'parley-rest'),
      ['--db', process.env.PARLEY_TEST_DB, '--notify-socket', process.env.PARLEY_TEST_NOTIFY_SOCKET, 'keys', 'add', 'kim'],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const ctxK = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const K = await ctxK.newPage();
    K.on('pageerror', (e) => errors.push(`K: ${e.message}`));
    await K.goto(`${REST}/demo`);
    await giveName(K, 'Kim');
    ok('the page asks for a key', await waitFor(K, () => document.getElementById('key-dialog').open, null, 'key dialog'));
    await K.fill('#key-input', key);
    await K.keyboard.press('Enter');
    ok('connected with the key', await waitFor(K, () => document.getElementById('conn').dataset.state === 'open' && document.getElementById('conn-text').textContent === 'Connected', null, 'K open'));
    await K.fill('#new-title', 'quota');
    await K.click('#create-button');
    ok('K opens a session', await waitFor(K, () => document.getElementById('chat-title').textContent === 'quota' && document.getElementById('presence').dataset.clients === '1', null, 'K session'));
    eq('K: the name given, not the key\'s', await people(K), ['Kim (you)']);
    await send(K, 'one');
    ok('first message answered', await repliesAre(K, 1, 'K 1'));
    await send(K, 'two');
    ok('second message answered', await repliesAre(K, 2, 'K 2'));
    await send(K, 'three');
    ok('the third is refused', await waitFor(K, () => !!document.querySelector('#messages li.msg.failed'), null, 'K failed'));
    const err = await text(K, '#messages li.msg.failed .msg-error');
    ok('the message is the server\'s, saying when the quota resets',
      /^this API key has sent its 2 messages for today \(its quota per UTC day\); the quota resets at \d{4}-\d\d-\d\dT00:00:00(\.000)?Z, in (\d+ h \d+ min|\d+ min|\d+ s)$/.test(err), err);
    eq('the toast says the same', await text(K, '#toast'), err);
    eq('the refused message: its text, its author, not sent', [await text(K, '#messages li.msg.failed .body'), await text(K, '#messages li.msg.failed .who'),
      await text(K, '#messages li.msg.failed .state'), await K.getAttribute('#messages li.msg.failed', 'data-code')], ['three', 'Kim', 'not sent', 'quota_exceeded']);
    await ctxK.close();
  });
  eq('no script errors on the key page', errors, []);
  await ctxA.close();
  await ctxB.close();
}

main(run);
