/**
 * Shared plumbing of the Chromium end-to-end scripts (`e2e_*.mjs`): arguments, a
 * tone WAV for the fake microphone, Debian's Chromium through playwright-core,
 * bounded waits, screenshots, and `@@marker` lines on stdout that the Rust test
 * driving the script reacts to.
 *
 * Every wait has a deadline, and a watchdog exits the process (code 2) if the whole
 * script overruns, so a hung browser can never hang CI.
 */

import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

/**
 * @typedef {object} Args
 * @property {string} url The demo page, e.g. `http://127.0.0.1:PORT/demo/`.
 * @property {string} out Folder for screenshots and logs (created).
 * @property {string} chromium The Chromium binary.
 * @property {string} to The number to dial.
 * @property {number} timeoutMs Budget of the whole script.
 * @property {string} secret The gateway's HS256 secret, for scripts that mint their
 *   own tokens (`--secret`; empty otherwise).
 */

/**
 * @param {{ urlOptional?: boolean }} [opts]
 * @returns {Args}
 */
export function args(opts = {}) {
  const { values } = parseArgs({
    options: {
      url: { type: 'string' },
      out: { type: 'string' },
      chromium: { type: 'string', default: process.env.CHROMIUM ?? '/usr/bin/chromium' },
      to: { type: 'string', default: '+15551234567' },
      'timeout-ms': { type: 'string', default: '90000' },
      secret: { type: 'string', default: '' },
    },
  });
  if ((!values.url && !opts.urlOptional) || !values.out) {
    console.error('usage: node e2e_*.mjs --url http://127.0.0.1:PORT/demo/ --out DIR [--to NUMBER] [--chromium PATH]');
    process.exit(64);
  }
  return {
    url: values.url ?? '',
    out: resolve(values.out),
    chromium: /** @type {string} */ (values.chromium),
    to: /** @type {string} */ (values.to),
    timeoutMs: Number(values['timeout-ms']),
    secret: /** @type {string} */ (values.secret),
  };
}

/**
 * Writes a mono 16-bit PCM WAV of a sine tone (the fake microphone loops it).
 *
 * @param {string} path
 * @param {{ hz?: number, rate?: number, seconds?: number, amplitude?: number }} [tone]
 */
export async function writeToneWav(path, { hz = 440, rate = 48000, seconds = 2, amplitude = 0.5 } = {}) {
  const samples = rate * seconds;
  const data = Buffer.alloc(samples * 2);
  for (let i = 0; i < samples; i++) {
    data.writeInt16LE(Math.round(amplitude * 32767 * Math.sin((2 * Math.PI * hz * i) / rate)), i * 2);
  }
  const header = Buffer.alloc(44);
  header.write('RIFF', 0);
  header.writeUInt32LE(36 + data.length, 4);
  header.write('WAVE', 8);
  header.write('fmt ', 12);
  header.writeUInt32LE(16, 16); // PCM chunk size
  header.writeUInt16LE(1, 20); // PCM
  header.writeUInt16LE(1, 22); // mono
  header.writeUInt32LE(rate, 24);
  header.writeUInt32LE(rate * 2, 28); // byte rate
  header.writeUInt16LE(2, 32); // block align
  header.writeUInt16LE(16, 34); // bits per sample
  header.write('data', 36);
  header.writeUInt32LE(data.length, 40);
  await writeFile(path, Buffer.concat([header, data]));
}

/**
 * Prints a marker line the Rust side waits for.
 *
 * @param {string} name
 * @param {unknown} [data]
 */
export function mark(name, data) {
  console.log(data === undefined ? `@@${name}` : `@@${name} ${JSON.stringify(data)}`);
}

/** @param {number} ms */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs `scenario` in a fresh Chromium on the demo page; exits 0 when it returns,
 * 1 when it throws (after a `failure.png`), 2 on the watchdog.
 *
 * @param {string} name Used for file names.
 * @param {(s: Session) => Promise<void>} scenario
 * @param {{ serveDemo?: boolean, beforeLoad?: (s: Session) => Promise<void> }} [options]
 *   `serveDemo`: serve `web-demo/` at `/demo/` from this process (no gateway) instead
 *   of opening `--url`; `beforeLoad`: set up the page (routes, bindings) before it loads.
 */
export async function run(name, scenario, options = {}) {
  const a = args({ urlOptional: options.serveDemo });
  await mkdir(a.out, { recursive: true });
  /** @type {import('node:http').Server | null} */
  let server = null;
  if (options.serveDemo) {
    server = await serveDemo();
    const address = /** @type {import('node:net').AddressInfo} */ (server.address());
    a.url = `http://127.0.0.1:${address.port}/demo/`;
  }
  const watchdog = setTimeout(() => {
    console.error(`${name}: watchdog: over ${a.timeoutMs} ms, exiting`);
    process.exit(2);
  }, a.timeoutMs);
  watchdog.unref();
  /** @type {Session | null} */
  let session = null;
  let code = 0;
  try {
    session = await Session.open(name, a);
    if (options.beforeLoad) await options.beforeLoad(session);
    await session.goto();
    await scenario(session);
    if (session.pageErrors.length) throw new Error(`uncaught errors in the page: ${session.pageErrors.join('; ')}`);
    console.log(`${name}: passed`);
  } catch (e) {
    code = 1;
    console.error(`${name}: FAILED: ${e instanceof Error ? e.stack : e}`);
    if (session) await session.screenshot('failure').catch(() => {});
    if (session) console.error(`status line: ${await session.statusText().catch(() => '?')}`);
  } finally {
    if (session) await session.close();
    server?.close();
    clearTimeout(watchdog);
  }
  process.exit(code);
}

/** Content types of the demo's files. */
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json' };

/**
 * Serves `web-demo/` at `/demo/` on 127.0.0.1 (ephemeral port), with a fake
 * `/demo/dev-token`, for scripts that play the signaling server themselves.
 *
 * @returns {Promise<import('node:http').Server>}
 */
async function serveDemo() {
  const { createServer } = await import('node:http');
  const { readFile } = await import('node:fs/promises');
  const { extname } = await import('node:path');
  const root = new URL('../../../web-demo/', import.meta.url);
  const server = createServer(async (req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (path === '/demo/dev-token') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(req.method === 'HEAD' ? undefined : JSON.stringify({ token: 'scripted-token', user: 'dev', expires_in: 3600 }));
      return;
    }
    const file = path === '/demo/' ? 'index.html' : path.replace(/^\/demo\//, '');
    if (!path.startsWith('/demo/') || file.includes('..')) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(new URL(file, root));
      res.writeHead(200, { 'content-type': TYPES[/** @type {keyof typeof TYPES} */ (extname(file))] ?? 'application/octet-stream' });
      res.end(req.method === 'HEAD' ? undefined : body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((done) => server.listen(0, '127.0.0.1', () => done(undefined)));
  return server;
}

/** One Chromium with the demo page open. */
export class Session {
  /**
   * @param {string} name
   * @param {Args} a
   * @param {import('playwright-core').BrowserContext} context
   * @param {import('playwright-core').Page} page
   * @param {string} profile
   */
  constructor(name, a, context, page, profile) {
    this.name = name;
    this.args = a;
    this.context = context;
    this.page = page;
    this.profile = profile;
    /** @type {string[]} The page's console, saved as `<name>-console.log`. */
    this.logLines = [];
    /** @type {string[]} Uncaught exceptions in the page: any fails the script. */
    this.pageErrors = [];
  }

  /** Opens the demo page (`--url`). */
  async goto() {
    await this.page.goto(this.args.url, { waitUntil: 'load' });
  }

  /**
   * @param {string} name
   * @param {Args} a
   * @returns {Promise<Session>}
   */
  static async open(name, a) {
    const { chromium } = await import('playwright-core');
    const wav = join(a.out, 'tone-440hz.wav');
    await writeToneWav(wav);
    const profile = await mkdtemp(join(tmpdir(), 'callbridge-chromium-'));
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: a.chromium,
      headless: true,
      timeout: 30_000,
      viewport: { width: 390, height: 844 }, // a phone
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--use-fake-device-for-media-stream',
        '--use-fake-ui-for-media-stream',
        `--use-file-for-fake-audio-capture=${wav}`,
        '--autoplay-policy=no-user-gesture-required',
        '--allow-loopback-in-peer-connection',
        '--disable-features=WebRtcHideLocalIpsWithMdns',
        '--disable-quic',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--disable-domain-reliability',
        '--no-first-run',
        '--no-default-browser-check',
      ],
    });
    context.setDefaultTimeout(15_000);
    const page = context.pages()[0] ?? (await context.newPage());
    const session = new Session(name, a, context, page, profile);
    page.on('console', (m) => session.logLines.push(`[console.${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => {
      session.logLines.push(`[pageerror] ${e.message}`);
      session.pageErrors.push(e.message);
      console.error(`page error: ${e.message}`);
    });
    return session;
  }

  /**
   * Polls `fn` in the page until it returns a truthy value; returns that value.
   *
   * @template T
   * @param {string} what Named in the timeout error.
   * @param {(arg: any) => T | Promise<T>} fn Runs in the page.
   * @param {{ arg?: any, timeoutMs?: number, everyMs?: number }} [options]
   * @returns {Promise<T>}
   */
  async until(what, fn, { arg, timeoutMs = 15_000, everyMs = 200 } = {}) {
    const deadline = Date.now() + timeoutMs;
    let last;
    while (Date.now() < deadline) {
      last = await this.page.evaluate(fn, arg);
      if (last) return last;
      await sleep(everyMs);
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last value ${JSON.stringify(last)}; status "${await this.statusText()}"`);
  }

  /** @returns {Promise<string>} The status line. */
  statusText() {
    return this.page.locator('#status').innerText({ timeout: 2000 });
  }

  /**
   * Waits until the status line's `data-call-state` is `state`.
   *
   * @param {string} state
   * @param {number} [timeoutMs]
   */
  async callState(state, timeoutMs = 15_000) {
    await this.until(`call state ${state}`, (s) => document.querySelector('#status')?.getAttribute('data-call-state') === s, {
      arg: state,
      timeoutMs,
    });
  }

  /** Signs in with the dev token and waits for `ready`. */
  async signInWithDevToken() {
    await this.page.locator('#dev-token').click({ timeout: 10_000 });
    await this.until('the client to be ready', () => window.demo?.client?.state === 'ready');
  }

  /**
   * Inbound RTP audio of the current call, from `getStats()`.
   *
   * @returns {Promise<{ packetsReceived: number, audioLevel: number, totalAudioEnergy: number, packetsSent: number } | null>}
   */
  inboundAudio() {
    return this.page.evaluate(async () => {
      const report = await window.demo?.call?.getStats();
      if (!report) return null;
      const out = { packetsReceived: 0, audioLevel: 0, totalAudioEnergy: 0, packetsSent: 0 };
      report.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') {
          out.packetsReceived = s.packetsReceived ?? 0;
          out.audioLevel = s.audioLevel ?? 0;
          out.totalAudioEnergy = s.totalAudioEnergy ?? 0;
        }
        if (s.type === 'outbound-rtp' && s.kind === 'audio') out.packetsSent = s.packetsSent ?? 0;
      });
      return out;
    });
  }

  /**
   * Waits for echoed audio: more than `minPackets` inbound packets and a non-zero
   * audio level.
   *
   * @param {number} [minPackets]
   */
  async waitForEchoedAudio(minPackets = 50) {
    const deadline = Date.now() + 20_000;
    let last = null;
    while (Date.now() < deadline) {
      last = await this.inboundAudio();
      if (last && last.packetsReceived > minPackets && last.audioLevel > 0) return last;
      await sleep(250);
    }
    throw new Error(`no echoed audio within 20 s: ${JSON.stringify(last)}`);
  }

  /** @param {string} label */
  async screenshot(label) {
    const path = join(this.args.out, `${this.name}-${label}.png`);
    await this.page.screenshot({ path, fullPage: true, timeout: 10_000 });
    console.log(`screenshot: ${path}`);
  }

  async close() {
    try {
      await writeFile(join(this.args.out, `${this.name}-console.log`), this.logLines.join('\n') + '\n');
    } catch {}
    await this.context.close().catch((e) => console.error(`closing Chromium: ${e}`));
    await rm(this.profile, { recursive: true, force: true }).catch(() => {});
  }
}
