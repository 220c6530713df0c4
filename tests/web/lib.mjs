// Helpers shared by the browser tests of the web demo (tests/web/*.test.mjs, run by
// tests/lib/web_support.py): TAP-like reporting (`ok - NAME` / `not ok - NAME: detail`),
// the wrapper's broker control (`@@ stop-broker`), REST from node, page helpers, and
// Chromium's launch with the run's end.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { chromium } from 'playwright-core';

export const REST = process.env.PARLEY_REST_URL;
export const WS = process.env.PARLEY_WS_URL;
export const OUT = process.env.PARLEY_TEST_OUTPUT;
export const UI_WAIT = 15000; // generous: the sanitizer build is slower; assertions stay exact

// ---------------------------------------------------------------- reporting

let failed = 0;
export const seen = new Map();
export function uniq(name) {
  const n = (seen.get(name) || 0) + 1;
  seen.set(name, n);
  return n === 1 ? name : `${name} #${n}`;
}
export const oneLine = (s) => String(s).replace(/\s+/g, ' ').slice(0, 500);
export function ok(name, cond, detail = 'condition false') {
  name = uniq(name);
  if (cond) console.log(`ok - ${name}`);
  else { failed += 1; console.log(`not ok - ${name}: ${oneLine(detail)}`); }
  return Boolean(cond);
}
export function eq(name, got, want) {
  return ok(name, JSON.stringify(got) === JSON.stringify(want),
    `got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}
export function diag(s) { for (const l of String(s).split('\n')) console.log(`# ${l}`); }
export async function step(name, fn) {
  try {
    await fn();
    return true;
  } catch (e) {
    ok(`${name}: raised`, false, e && e.message ? e.message.split('\n')[0] : String(e));
    return false;
  }
}

// ---------------------------------------------------------------- wrapper control

export const lines = readline.createInterface({ input: process.stdin });
export const answers = [];
let waiter = null;
lines.on('line', (l) => { if (waiter) { const w = waiter; waiter = null; w(l); } else answers.push(l); });
export function control(what) {
  console.log(`@@ ${what}`);
  return new Promise((resolve) => { if (answers.length) resolve(answers.shift()); else waiter = resolve; });
}

// ---------------------------------------------------------------- REST from node

export async function rest(method, p, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch(REST + p, init);
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, body: json, text };
}

// ---------------------------------------------------------------- page helpers

// Every frame a page sends on its WebSockets, parsed, and the URLs it opened.
export function watchSockets(page) {
  const rec = { urls: [], sent: [] };
  page.on('websocket', (ws) => {
    rec.urls.push(ws.url());
    ws.on('framesent', (f) => { try { rec.sent.push(JSON.parse(f.payload)); } catch { /* binary */ } });
  });
  return rec;
}

export const text = (page, sel) => page.locator(sel).first().textContent({ timeout: UI_WAIT });
export const attr = (page, sel, a) => page.locator(sel).first().getAttribute(a, { timeout: UI_WAIT });

export async function waitFor(page, fn, arg, what) {
  try {
    await page.waitForFunction(fn, arg, { timeout: UI_WAIT, polling: 50 });
    return true;
  } catch (e) {
    diag(`waiting for ${what}: ${e.message.split('\n')[0]}`);
    return false;
  }
}

// The texts of the user messages / assistant replies shown, in order.
export const shown = (page, role) => page.$$eval(`#messages li.msg[data-role="${role}"]:not(.streaming) .body`,
  (els) => els.map((e) => e.textContent));

// Records every text an assistant bubble shows while it streams (each chunk a step).
export async function recordStreams(page) {
  await page.evaluate(() => {
    window.__streamTexts = [];
    const obs = new MutationObserver(() => {
      for (const li of document.querySelectorAll('#messages li.streaming .body')) {
        const t = li.textContent;
        const last = window.__streamTexts[window.__streamTexts.length - 1];
        if (t !== '' && t !== last) window.__streamTexts.push(t);
      }
    });
    obs.observe(document.getElementById('messages'), { subtree: true, childList: true, characterData: true });
    window.__streamObs = obs;
  });
}
export async function streamTexts(page) {
  return page.evaluate(() => { window.__streamObs.disconnect(); return window.__streamTexts; });
}

// How the echo assistant splits a message: each word with the whitespace after it.
export const echoChunks = (s) => s.match(/\s*\S+\s*/g);
export const prefixes = (chunks) => chunks.map((_, i) => chunks.slice(0, i + 1).join(''));

// The first visit asks for a display name (SPEC 9): gives it.
export async function giveName(page, name) {
  await page.waitForFunction(() => document.getElementById('name-dialog').open, null, { timeout: UI_WAIT, polling: 50 });
  await page.fill('#name-input', name);
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => !document.getElementById('name-dialog').open, null, { timeout: UI_WAIT, polling: 50 });
}

// ---------------------------------------------------------------- running

// Launches headless Chromium, runs run(browser), closes it, prints the summary and exits
// (1 when something failed).
export function main(run) {
  const t0 = Date.now();
  const go = async () => {
    const userDir = mkdtempSync(path.join(tmpdir(), 'parley-chromium-'));
    const browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
    });
    try {
      await run(browser);
    } finally {
      await browser.close();
      rmSync(userDir, { recursive: true, force: true });
    }
  };
  go()
    .catch((e) => { ok('browser test: raised', false, e && e.stack ? e.stack : String(e)); })
    .finally(() => {
      diag(`${failed} failed, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      lines.close();
      process.exit(failed ? 1 : 0);
    });
}
