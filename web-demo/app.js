// @ts-check
/**
 * The demo page: sign in (pasted token or dev token), dial, answer, DTMF, mute,
 * hold, a quality panel and a microphone meter, all through `callbridge.js`.
 *
 * For tests and curious developers, `window.demo` holds the client, the current call
 * and the latest quality figures.
 */

import { CallbridgeClient, audioQuality, defaultUrl } from './callbridge.js';

/** @typedef {import('./callbridge.js').Call} Call */

/**
 * @template {HTMLElement} T
 * @param {string} id
 * @returns {T}
 */
function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`index.html has no #${id}`);
  return /** @type {T} */ (el);
}

const ui = {
  connection: byId('connection'),
  login: byId('login'),
  signedIn: byId('signed-in'),
  token: /** @type {HTMLTextAreaElement} */ (byId('token')),
  url: /** @type {HTMLInputElement} */ (byId('url')),
  connect: /** @type {HTMLButtonElement} */ (byId('connect')),
  devToken: /** @type {HTMLButtonElement} */ (byId('dev-token')),
  disconnect: /** @type {HTMLButtonElement} */ (byId('disconnect')),
  incoming: byId('incoming'),
  incomingText: byId('incoming-text'),
  accept: /** @type {HTMLButtonElement} */ (byId('accept')),
  reject: /** @type {HTMLButtonElement} */ (byId('reject')),
  status: byId('status'),
  number: /** @type {HTMLInputElement} */ (byId('number')),
  keypad: byId('keypad'),
  dtmfSent: byId('dtmf-sent'),
  call: /** @type {HTMLButtonElement} */ (byId('call')),
  hangup: /** @type {HTMLButtonElement} */ (byId('hangup')),
  mute: /** @type {HTMLButtonElement} */ (byId('mute')),
  hold: /** @type {HTMLButtonElement} */ (byId('hold')),
  micLevel: byId('mic-level'),
  qMos: byId('q-mos'),
  qJitter: byId('q-jitter'),
  qLoss: byId('q-loss'),
  qRtt: byId('q-rtt'),
  qSource: byId('q-source'),
  log: byId('log'),
  drop: /** @type {HTMLButtonElement} */ (byId('drop')),
  remoteAudio: /** @type {HTMLAudioElement} */ (byId('remote-audio')),
};

/**
 * What the page holds; also `window.demo`.
 *
 * @type {{ client: CallbridgeClient | null, call: Call | null, incoming: Call | null,
 *          quality: ReturnType<typeof audioQuality>, micLevel: number, dtmf: string }}
 */
const demo = { client: null, call: null, incoming: null, quality: null, micLevel: 0, dtmf: '' };
Object.assign(window, { demo });

/** Human text for each call state. */
const CALL_TEXT = {
  new: (/** @type {Call} */ c) => `Calling ${c.to}…`,
  calling: (/** @type {Call} */ c) => `Calling ${c.to}…`,
  ringing: () => 'Ringing…',
  progress: () => 'Call in progress…',
  incoming: (/** @type {Call} */ c) => `Incoming call from ${c.from || 'unknown'}`,
  accepting: () => 'Answering…',
  answered: (/** @type {Call} */ c) => `Answered: talking to ${c.direction === 'outbound' ? c.to : c.from || 'caller'}`,
};

// ---- log and status ---------------------------------------------------------

/** @param {string} text */
function log(text) {
  const item = document.createElement('li');
  item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  ui.log.prepend(item);
  while (ui.log.children.length > 60) ui.log.lastElementChild?.remove();
}

/**
 * @param {string} text
 * @param {string} [callState] Mirrored in `data-call-state` for tests and styling.
 */
function setStatus(text, callState) {
  ui.status.textContent = text;
  if (callState) ui.status.dataset.callState = callState;
}

// ---- connection -------------------------------------------------------------

async function connect() {
  const token = ui.token.value.trim();
  if (!token) {
    setStatus('Paste a token first (or use a dev token).');
    ui.token.focus();
    return;
  }
  demo.client?.close();
  const client = new CallbridgeClient({ url: ui.url.value.trim() || defaultUrl(), token });
  demo.client = client;
  /** @type {Record<CallbridgeClient['state'], string>} */
  const connectionText = { idle: 'offline', connecting: 'connecting', ready: 'online', reconnecting: 'reconnecting', closed: 'offline' };
  client.on('state', (/** @type {{ state: CallbridgeClient['state'] }} */ { state }) => {
    ui.connection.textContent = connectionText[state];
    ui.connection.dataset.state = state;
    if (state === 'ready' && !demo.call && ui.status.dataset.callState !== 'ended') setStatus(`Ready as ${client.user}. Dial a number.`, 'none');
    refreshButtons();
  });
  client.on('reconnecting', ({ attempt, delayMs }) => {
    log(`connection lost; reconnecting (attempt ${attempt}) in ${delayMs} ms`);
    setStatus(`Connection lost, reconnecting (attempt ${attempt})…`);
  });
  client.on('ready', ({ user, sessionId, resumed }) => {
    log(`${resumed ? 'resumed' : 'ready'}: ${user}, session ${sessionId}`);
    if (resumed && demo.call) showCallState(demo.call);
  });
  client.on('closed', ({ code, error }) => {
    log(`closed (${code})${error ? `: ${error.message}` : ''}`);
    if (client === demo.client) setStatus(error ? `Disconnected: ${error.message}` : 'Disconnected.', 'none');
  });
  client.on('error', (error) => log(`error ${error.code}: ${error.message}`));
  client.on('incoming', onIncoming);
  setStatus('Connecting…');
  try {
    await client.connect();
  } catch (e) {
    // `closed` already said why.
  }
}

async function useDevToken() {
  try {
    const response = await fetch(new URL('dev-token', location.href));
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    ui.token.value = body.token;
    log(`dev token for ${body.user}, valid ${Math.round(body.expires_in / 60)} min`);
    await connect();
  } catch (e) {
    setStatus(`No dev token: ${e}`);
  }
}

/** Shows the dev-token button when the gateway offers dev tokens (embedded defaults). */
async function probeDevToken() {
  try {
    const response = await fetch(new URL('dev-token', location.href), { method: 'HEAD' });
    ui.devToken.hidden = !response.ok;
  } catch {
    ui.devToken.hidden = true;
  }
}

// ---- calls ------------------------------------------------------------------

function placeCall() {
  const client = demo.client;
  const to = ui.number.value.trim();
  if (!client || client.state !== 'ready') return;
  if (!to) {
    setStatus('Enter a number to dial.');
    ui.number.focus();
    return;
  }
  try {
    attachCall(client.call(to));
  } catch (e) {
    setStatus(`Cannot call: ${/** @type {Error} */ (e).message}`);
  }
}

/** @param {Call} call */
function onIncoming(call) {
  if (demo.call || demo.incoming) {
    log(`busy: rejecting ${call.from}`);
    call.reject();
    return;
  }
  demo.incoming = call;
  ui.incomingText.textContent = `Incoming call from ${call.from || 'unknown'} to ${call.to}`;
  ui.incoming.hidden = false;
  setStatus(CALL_TEXT.incoming(call), 'incoming');
  log(`incoming ${call.id} from ${call.from}`);
  refreshButtons();
  call.on('ended', (m) => {
    if (demo.incoming !== call) return;
    demo.incoming = null;
    ui.incoming.hidden = true;
    setStatus(`Missed call from ${call.from || 'unknown'} (${m.reason.replaceAll('_', ' ')}).`, 'ended');
    refreshButtons();
  });
}

async function acceptIncoming() {
  const call = demo.incoming;
  if (!call) return;
  demo.incoming = null;
  ui.incoming.hidden = true;
  attachCall(call);
  try {
    await call.accept();
  } catch (e) {
    // `error` and `ended` already reported it.
  }
}

function rejectIncoming() {
  const call = demo.incoming;
  if (!call) return;
  demo.incoming = null;
  ui.incoming.hidden = true;
  call.reject();
  setStatus('Call rejected.', 'ended');
  refreshButtons();
}

/**
 * Makes `call` the page's current call.
 *
 * @param {Call} call
 */
function attachCall(call) {
  demo.call = call;
  demo.dtmf = '';
  ui.dtmfSent.textContent = '';
  showCallState(call);
  call.on('state', () => {
    showCallState(call);
    if (call.localStream && !meter) startMeter(call.localStream);
  });
  call.on('remotestream', ({ stream }) => {
    ui.remoteAudio.srcObject = stream;
    ui.remoteAudio.play().catch(() => log('press a button to hear the call (autoplay blocked)'));
  });
  call.on('mediastate', ({ state }) => log(`media ${state}`));
  call.on('error', (error) => log(`call error ${error.code}: ${error.message}`));
  call.on('ended', (m) => {
    const sip = m.sip_status ? ` (SIP ${m.sip_status})` : '';
    setStatus(`Call ended: ${m.reason.replaceAll('_', ' ')}${sip}.`, 'ended');
    log(`ended ${call.id}: ${m.reason}${sip}${m.local ? ' (local)' : ''}`);
    if (demo.call === call) demo.call = null;
    stopMeter();
    ui.remoteAudio.srcObject = null;
    refreshButtons();
  });
  log(`${call.direction} call ${call.id} ${call.direction === 'outbound' ? `to ${call.to}` : `from ${call.from}`}`);
  refreshButtons();
}

/** @param {Call} call */
function showCallState(call) {
  const text = CALL_TEXT[/** @type {keyof typeof CALL_TEXT} */ (call.state)];
  if (text) setStatus(text(call) + (call.held ? ' (on hold)' : ''), call.state);
  refreshButtons();
}

/** @param {string} key */
function pressKey(key) {
  const call = demo.call;
  if (call && call.state !== 'new' && call.state !== 'ended') {
    try {
      call.dtmf(key);
      demo.dtmf += key;
      ui.dtmfSent.textContent = `DTMF sent: ${demo.dtmf}`;
    } catch (e) {
      log(`dtmf: ${/** @type {Error} */ (e).message}`);
    }
    return;
  }
  ui.number.value += key;
}

function toggleMute() {
  const call = demo.call;
  if (!call) return;
  call.mute(!call.muted);
  refreshButtons();
}

function toggleHold() {
  const call = demo.call;
  if (!call) return;
  if (call.held) call.unhold();
  else call.hold();
  showCallState(call);
}

function refreshButtons() {
  const ready = demo.client?.state === 'ready';
  const connected = Boolean(demo.client) && demo.client?.state !== 'closed';
  const call = demo.call;
  const live = Boolean(call) && call?.state !== 'ended';
  ui.call.disabled = !ready || live || Boolean(demo.incoming);
  ui.hangup.disabled = !live;
  ui.mute.disabled = !live;
  ui.hold.disabled = !live || call?.state !== 'answered';
  ui.mute.setAttribute('aria-pressed', String(Boolean(call?.muted)));
  ui.mute.textContent = call?.muted ? 'Unmute' : 'Mute';
  ui.hold.setAttribute('aria-pressed', String(Boolean(call?.held)));
  ui.hold.textContent = call?.held ? 'Resume' : 'Hold';
  ui.connect.hidden = connected;
  ui.disconnect.hidden = !connected;
  ui.login.classList.toggle('signed-in', connected);
  ui.signedIn.hidden = !connected;
  ui.signedIn.textContent = demo.client?.user ? `Signed in as ${demo.client.user}` : 'Signing in…';
  ui.drop.disabled = !ready;
}

// ---- microphone meter -------------------------------------------------------

/** @type {{ context: AudioContext, timer: number } | null} */
let meter = null;

/** @param {MediaStream} stream */
function startMeter(stream) {
  stopMeter();
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  analyser.fftSize = 1024;
  context.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const timer = window.setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    const rms = Math.sqrt(sum / samples.length);
    demo.micLevel = Math.min(1, rms * 4);
    ui.micLevel.style.width = `${Math.round(demo.micLevel * 100)}%`;
  }, 100);
  meter = { context, timer };
}

function stopMeter() {
  if (!meter) return;
  clearInterval(meter.timer);
  meter.context.close();
  meter = null;
  demo.micLevel = 0;
  ui.micLevel.style.width = '0';
}

// ---- quality panel ----------------------------------------------------------

/** @param {number | null | undefined} v @param {number} digits @param {string} unit */
function fmt(v, digits, unit) {
  return typeof v === 'number' && Number.isFinite(v) ? `${v.toFixed(digits)}${unit}` : '–';
}

async function updateQuality() {
  const call = demo.call;
  if (!call || call.state === 'ended') return;
  const quality = audioQuality(await call.getStats());
  demo.quality = quality;
  const server = call.lastStats;
  if (server) {
    ui.qMos.textContent = fmt(server.mos, 1, '');
    ui.qJitter.textContent = fmt(server.jitter_ms, 1, ' ms');
    ui.qLoss.textContent = fmt(server.loss_pct, 1, ' %');
    ui.qRtt.textContent = fmt(server.rtt_ms, 0, ' ms');
    ui.qSource.textContent = 'Measured by the gateway.';
  } else if (quality) {
    ui.qMos.textContent = fmt(quality.mos, 1, '');
    ui.qJitter.textContent = fmt(quality.jitterMs, 1, ' ms');
    ui.qLoss.textContent = fmt(quality.lossPct, 1, ' %');
    ui.qRtt.textContent = fmt(quality.rttMs, 0, ' ms');
    ui.qSource.textContent = `Browser estimate, ${quality.packetsReceived} packets received.`;
  }
}

// ---- wiring -----------------------------------------------------------------

ui.url.value = defaultUrl();
ui.connect.addEventListener('click', connect);
ui.devToken.addEventListener('click', useDevToken);
ui.disconnect.addEventListener('click', () => {
  demo.client?.close();
  refreshButtons();
});
ui.call.addEventListener('click', placeCall);
ui.hangup.addEventListener('click', () => demo.call?.hangup());
ui.accept.addEventListener('click', acceptIncoming);
ui.reject.addEventListener('click', rejectIncoming);
ui.mute.addEventListener('click', toggleMute);
ui.hold.addEventListener('click', toggleHold);
ui.drop.addEventListener('click', () => demo.client?.dropConnection());
ui.number.addEventListener('keydown', (e) => {
  if (e.key === 'Enter') placeCall();
});
ui.keypad.addEventListener('click', (e) => {
  const button = /** @type {HTMLElement} */ (e.target).closest('button[data-key]');
  if (button instanceof HTMLElement && button.dataset.key) pressKey(button.dataset.key);
});
window.addEventListener('pagehide', () => demo.client?.close());
window.setInterval(updateQuality, 1000);
refreshButtons();
probeDevToken();
