// Chromium end to end, driven by tests/browser_demo.rs: the embedding page
// (web-demo/embed.html, whose client takes its token from a function) outlives its
// first token. The script plays the app's backend: `/demo/dev-token` answers with
// tokens it mints itself (HS256 with the gateway's test secret, `--secret`), the
// first one valid for a few seconds only, the next ones for an hour. The client must
// refresh before the first exp (`reauth` → `reauthed`), keep its socket past that
// exp, and still place a call.

import { createHmac } from 'node:crypto';

import { mark, run } from './lib/harness.mjs';

/** Seconds the first token lives (the gateway runs without leeway); the client
 * refreshes when 10 % of it is left. */
const FIRST_TOKEN_SECS = 20;

/**
 * A protocol token for user `dev`, valid for `secs` from now.
 *
 * @param {string} secret
 * @param {number} secs
 */
function mint(secret, secs) {
  const now = Math.floor(Date.now() / 1000);
  const b64 = (/** @type {object} */ o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({
    sub: 'dev',
    exp: now + secs,
    iat: now,
    aud: 'callbridge',
    scope: 'calls:outbound calls:inbound',
  })}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

/** @type {{ token: string, exp: number }[]} Tokens handed to the page, in order. */
const issued = [];
/** @type {any[]} Frames the page sent and received on its signaling socket. */
const frames = [];
/** @type {{ code: string } | null} Set if the page's signaling socket closes. */
let socketClosed = null;
/** @type {unknown} The page client's signaling socket (the first one it opens). */
let pageSocket = null;

await run(
  'reauth',
  async (s) => {
    await s.until('ready', () => /^ready as /.test(document.querySelector('#status').textContent), { timeoutMs: 30_000 });
    const first = issued[0];
    if (!first) throw new Error('the page never fetched a token');
    mark('ready', { exp: first.exp });

    // A raw socket in the page with the first token and no refresh: its close marks
    // the first exp (an event, not a guess at the time).
    const control = await s.page.evaluate(
      ({ url, token }) =>
        new Promise((resolve) => {
          const ws = new WebSocket(url);
          ws.onopen = () => ws.send(JSON.stringify({ type: 'auth', token }));
          ws.onclose = (e) => resolve({ code: e.code, reason: e.reason, at: Date.now() / 1000 });
        }),
      { url: `ws://${new URL(s.args.url).host}/ws`, token: first.token },
    );
    console.log(`control socket: ${JSON.stringify(control)}`);
    if (control.code !== 4001 || control.reason !== 'token expired') {
      throw new Error(`the control session should end 4001 "token expired", got ${JSON.stringify(control)}`);
    }
    const reauth = frames.find((f) => f.dir === 'sent' && f.type === 'reauth');
    const reauthed = frames.find((f) => f.dir === 'received' && f.type === 'reauthed');
    if (!reauth || !reauthed) throw new Error(`no reauth/reauthed before the first exp: ${JSON.stringify(frames)}`);
    if (reauthed.expires_at !== issued[1]?.exp) throw new Error(`reauthed ${JSON.stringify(reauthed)} is not the second token's exp`);
    if (socketClosed) throw new Error(`the page's socket closed: ${JSON.stringify(socketClosed)}`);
    mark('reauthed', { expires_at: reauthed.expires_at });

    // The session still works past the first exp: a call is answered and hung up.
    await s.page.locator('#to').fill(s.args.to);
    await s.page.locator('#dial').click();
    await s.until('answered', () => document.querySelector('#status').textContent === 'answered');
    mark('answered');
    await s.screenshot('answered');
    await s.page.locator('#hangup').click();
    await s.until('ended: hangup', () => document.querySelector('#status').textContent === 'ended: hangup');
    if (socketClosed) throw new Error(`the page's socket closed: ${JSON.stringify(socketClosed)}`);
    if (frames.filter((f) => f.type === 'auth').length !== 1) throw new Error('the page authenticated more than once');
    mark('done');
  },
  {
    beforeLoad: async (s) => {
      if (!s.args.secret) throw new Error('--secret is required');
      await s.page.route('**/demo/dev-token', (route) => {
        const secs = issued.length === 0 ? FIRST_TOKEN_SECS : 3600;
        const token = mint(s.args.secret, secs);
        issued.push({ token, exp: Math.floor(Date.now() / 1000) + secs });
        return route.fulfill({ json: { token, user: 'dev', expires_in: secs } });
      });
      s.page.on('websocket', (ws) => {
        // Only the client's socket, not the control socket opened later.
        if (!ws.url().endsWith('/ws') || pageSocket !== null) return;
        pageSocket = ws;
        const record = (/** @type {'sent' | 'received'} */ dir) => (/** @type {{ payload: string | Buffer }} */ f) => {
          try {
            const m = JSON.parse(String(f.payload));
            frames.push({ dir, type: m.type, expires_at: m.expires_at });
          } catch {
            // not JSON: not ours
          }
        };
        ws.on('framesent', record('sent'));
        ws.on('framereceived', record('received'));
        ws.on('close', () => (socketClosed = { code: 'closed' }));
      });
    },
  },
);
