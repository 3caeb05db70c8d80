// Chromium, no gateway: the demo page against a signaling server played by this
// script (Playwright's routeWebSocket), for what the gateway does not do yet and for
// the page's own wiring. The far end is a second RTCPeerConnection in the same page,
// fed by the fake microphone, so the incoming call carries real audio.
//
// Covers: the incoming-call banner, accept (answer SDP, trickle both ways, audio in),
// DTMF keys, hold/resume, a dropped WebSocket resumed with the right session id and
// token (and a DTMF after it), the gateway's stats in the quality panel, hang-up, and
// rejecting a second incoming call.

import { mark, run } from './lib/harness.mjs';

const CALL = 'i-1';

/** Every frame the page sent, with the number of the socket it came on. */
const frames = [];
/** @type {import('playwright-core').WebSocketRoute | null} */
let socket = null;
let sockets = 0;
const send = (message) => socket?.send(JSON.stringify(message));

/**
 * The scripted gateway: answers auth and resume, relays the far end's SDP and ICE.
 *
 * @param {import('./lib/harness.mjs').Session} s
 */
async function playGateway(s) {
  const page = s.page;
  await page.exposeFunction('farCandidate', (candidate) => send({ type: 'ice', call_id: CALL, candidate }));
  await page.routeWebSocket(/\/ws$/, (ws) => {
    const n = ++sockets;
    socket = ws;
    let chain = Promise.resolve(); // one frame at a time, in order
    ws.onMessage((text) => {
      chain = chain.then(async () => {
        const m = JSON.parse(String(text));
        frames.push({ socket: n, ...m });
        switch (m.type) {
          case 'auth':
            ws.send(JSON.stringify({ type: 'ready', session_id: 's-scripted', resume_token: 'rt-1', user: 'dev', ice_servers: [] }));
            break;
          case 'resume':
            ws.send(JSON.stringify({ type: 'ready', session_id: m.session_id, resume_token: 'rt-2', user: 'dev', ice_servers: [] }));
            break;
          case 'accept':
            await page.evaluate((sdp) => window.far.setRemoteDescription({ type: 'answer', sdp }), m.sdp);
            ws.send(JSON.stringify({ type: 'answered', call_id: m.call_id }));
            break;
          case 'ice':
            if (m.call_id === CALL) await page.evaluate((c) => (c ? window.far.addIceCandidate(c) : window.far.addIceCandidate()), m.candidate);
            break;
          case 'hangup':
            ws.send(JSON.stringify({ type: 'ended', call_id: m.call_id, reason: 'hangup' }));
            break;
          case 'reject':
            ws.send(JSON.stringify({ type: 'ended', call_id: m.call_id, reason: 'rejected', sip_status: 603 }));
            break;
        }
      });
    });
  });
}

/**
 * Waits for a frame the page sent.
 *
 * @param {string} what
 * @param {(f: any) => boolean} match
 */
async function frame(what, match, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const found = frames.find(match);
    if (found) return found;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the page sent no ${what}; frames: ${JSON.stringify(frames.map((f) => f.type))}`);
}

await run(
  'scripted',
  async (s) => {
    const page = s.page;
    await s.signInWithDevToken();
    await frame('auth', (f) => f.type === 'auth' && f.token === 'scripted-token');

    // The far end makes an offer with the fake microphone's tone.
    await page.evaluate(async () => {
      const far = new RTCPeerConnection();
      window.far = far;
      window.farCandidates = [];
      far.onicecandidate = (e) => window.farCandidates.push(e.candidate ? e.candidate.toJSON() : null);
      const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
      for (const track of mic.getTracks()) far.addTrack(track, mic);
      await far.setLocalDescription(await far.createOffer());
    });
    const offer = await page.evaluate(() => window.far.localDescription.sdp);
    send({ type: 'incoming', call_id: CALL, from: '+15557654321', to: '+15550001000', sdp: offer });
    // The far end's candidates follow the offer, before the user answers.
    await page.evaluate(async () => {
      await new Promise((r) => setTimeout(r, 300));
      for (const c of window.farCandidates.splice(0)) await window.farCandidate(c);
      window.far.onicecandidate = (e) => window.farCandidate(e.candidate ? e.candidate.toJSON() : null);
    });

    await page.locator('#incoming').waitFor({ state: 'visible', timeout: 10_000 });
    const banner = await page.locator('#incoming-text').innerText();
    if (!banner.includes('+15557654321')) throw new Error(`banner says "${banner}"`);
    await s.screenshot('banner');
    await page.locator('#accept').click();
    const accept = await frame('accept', (f) => f.type === 'accept' && f.call_id === CALL);
    if (!/^v=0/.test(accept.sdp)) throw new Error('accept carries no SDP answer');
    await s.callState('answered');
    await frame('a trickled candidate', (f) => f.type === 'ice' && f.call_id === CALL && f.candidate);
    const audio = await s.waitForEchoedAudio(20); // here: the far end's tone
    console.log(`audio from the far end: ${JSON.stringify(audio)}`);
    mark('answered');

    await page.locator('#keypad button[data-key="5"]').click();
    await frame('dtmf 5', (f) => f.type === 'dtmf' && f.call_id === CALL && f.digits === '5');
    await page.locator('#hold').click();
    await frame('hold', (f) => f.type === 'hold' && f.call_id === CALL);
    await s.until('"on hold" in the status line', () => /on hold/.test(document.querySelector('#status').textContent));
    await s.screenshot('held');
    await page.locator('#hold').click();
    await frame('unhold', (f) => f.type === 'unhold' && f.call_id === CALL);
    await page.locator('#mute').click();
    await s.until('the microphone track muted', () => window.demo.call.localStream.getAudioTracks()[0].enabled === false);
    await page.locator('#mute').click();

    // Drop the socket from the page; the client must resume with the session's secrets.
    await page.locator('#log-box summary').click();
    await page.locator('#drop').click();
    const resume = await frame('resume', (f) => f.type === 'resume', 15_000);
    if (resume.session_id !== 's-scripted' || resume.resume_token !== 'rt-1' || resume.socket !== 2) {
      throw new Error(`bad resume: ${JSON.stringify(resume)}`);
    }
    await s.until('the client ready again', () => window.demo.client.state === 'ready');
    await s.callState('answered');
    await page.locator('#keypad button[data-key="7"]').click();
    await frame('dtmf 7 on the new socket', (f) => f.type === 'dtmf' && f.digits === '7' && f.socket === 2);
    mark('resumed');

    send({ type: 'stats', call_id: CALL, mos: 4.3, jitter_ms: 3.1, loss_pct: 0.5, rtt_ms: 12 });
    await s.until('the gateway stats in the quality panel', () =>
      document.querySelector('#q-mos').textContent === '4.3' && /gateway/.test(document.querySelector('#q-source').textContent),
    );
    await s.screenshot('answered');

    await page.locator('#hangup').click();
    await frame('hangup', (f) => f.type === 'hangup' && f.call_id === CALL && f.socket === 2);
    await s.callState('ended');
    const ended = await s.statusText();
    if (!/ended: hangup/.test(ended)) throw new Error(`status says "${ended}"`);

    // A second incoming call, rejected from the banner.
    send({ type: 'incoming', call_id: 'i-2', from: '+15550009999', to: '+15550001000', sdp: offer });
    await page.locator('#incoming').waitFor({ state: 'visible', timeout: 10_000 });
    await page.locator('#reject').click();
    await frame('reject', (f) => f.type === 'reject' && f.call_id === 'i-2');
    await page.locator('#incoming').waitFor({ state: 'hidden', timeout: 5000 });
    const last = await s.statusText();
    if (!/rejected/i.test(last)) throw new Error(`status says "${last}"`);
    mark('done');
  },
  { serveDemo: true, beforeLoad: playGateway },
);
