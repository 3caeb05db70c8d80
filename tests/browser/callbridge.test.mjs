// Unit tests of web-demo/callbridge.js against a fake socket, a fake peer connection
// and fake timers: `node --test tests/browser/` (no browser, no server).

import { afterEach, beforeEach, describe, mock, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  CallbridgeClient,
  CallbridgeError,
  audioQuality,
  defaultUrl,
  estimateMos,
} from '../../web-demo/callbridge.js';
import { fakeGetUserMedia, fakePeerConnections, fakeWebSockets, settle } from './fakes.mjs';

const READY = {
  type: 'ready',
  session_id: 's-1',
  resume_token: 'rt-1',
  user: 'alice',
  ice_servers: [{ urls: ['turn:gw.example:3478?transport=udp'], username: '1767225600:alice', credential: 'pw' }],
};

beforeEach(() => mock.timers.enable({ apis: ['setTimeout'] }));
afterEach(() => mock.timers.reset());

/**
 * A client wired to fakes. `random: () => 0` makes the backoff exact.
 *
 * @param {object} [options] Extra client options.
 * @param {{ fail?: Error }} [media]
 */
function harness(options = {}, media = {}) {
  const ws = fakeWebSockets();
  const pcs = fakePeerConnections();
  const mic = fakeGetUserMedia(media);
  const client = new CallbridgeClient({
    url: 'ws://gw.test/ws',
    token: 'jwt-1',
    WebSocket: ws.WebSocket,
    RTCPeerConnection: pcs.RTCPeerConnection,
    getUserMedia: mic.getUserMedia,
    random: () => 0,
    ...options,
  });
  /** @type {{ type: string, detail: any }[]} */
  const events = [];
  for (const type of ['state', 'ready', 'incoming', 'disconnected', 'reconnecting', 'closed', 'error']) {
    client.on(type, (detail) => events.push({ type, detail }));
  }
  return { client, sockets: ws.sockets, pcs: pcs.instances, mic, events };
}

/** A harness whose client is connected (`ready` received). */
async function connected(options = {}, media = {}) {
  const h = harness(options, media);
  const ready = h.client.connect();
  await settle();
  h.sockets[0].open();
  h.sockets[0].receive(READY);
  await ready;
  return { ...h, ws: h.sockets[0] };
}

/**
 * Records a call's events as `type` strings (and keeps their details).
 *
 * @param {import('../../web-demo/callbridge.js').Call} call
 */
function record(call) {
  /** @type {{ type: string, detail: any }[]} */
  const seen = [];
  for (const type of ['state', 'answer', 'ringing', 'progress', 'answered', 'ended', 'stats', 'error', 'hold', 'mute', 'mediastate']) {
    call.on(type, (detail) => seen.push({ type, detail }));
  }
  return seen;
}

/** Places a call and lets it reach `calling` (the `call` message sent). */
async function placed(h, to = '+15551234567', options = {}) {
  const call = h.client.call(to, options);
  const seen = record(call);
  await settle();
  return { call, seen, pc: h.pcs[h.pcs.length - 1] };
}

/** A socket attempt the network refuses before it opens. */
function refuse(socket) {
  socket.serverClose(1006);
}

describe('connect and auth', () => {
  test('sends auth as the first frame and resolves with ready', async () => {
    const h = harness();
    const ready = h.client.connect();
    assert.equal(h.client.state, 'connecting');
    await settle();
    assert.equal(h.sockets.length, 1);
    assert.equal(h.sockets[0].url, 'ws://gw.test/ws', 'token never in the URL');
    assert.deepEqual(h.sockets[0].sent, [], 'nothing before open');
    h.sockets[0].open();
    assert.deepEqual(h.sockets[0].sent, [{ type: 'auth', token: 'jwt-1' }]);
    h.sockets[0].receive(READY);
    const info = await ready;
    assert.deepEqual(info, { sessionId: 's-1', user: 'alice', iceServers: READY.ice_servers, resumed: false, expiresAt: null });
    assert.equal(h.client.state, 'ready');
    assert.deepEqual(
      h.events.filter((e) => e.type === 'state').map((e) => e.detail.state),
      ['connecting', 'ready'],
    );
    h.client.close();
  });

  test('a token function is called for the auth frame', async () => {
    let calls = 0;
    const h = harness({ token: async () => `fresh-${++calls}` });
    const ready = h.client.connect();
    await settle();
    h.sockets[0].open();
    assert.deepEqual(h.sockets[0].sent, [{ type: 'auth', token: 'fresh-1' }]);
    h.sockets[0].receive(READY);
    await ready;
    h.client.close();
  });

  for (const [code, errorCode] of [
    [4001, 'unauthorized'],
    [4003, 'forbidden'],
    [4008, 'unauthorized'],
  ]) {
    test(`close ${code} rejects connect() and never reconnects`, async () => {
      const h = harness();
      const ready = h.client.connect();
      await settle();
      h.sockets[0].open();
      h.sockets[0].receive({ type: 'error', code: errorCode, message: 'token expired', correlation_id: 'corr-9' });
      h.sockets[0].serverClose(code, 'token expired');
      await assert.rejects(ready, (e) => e instanceof CallbridgeError && e.code === errorCode && e.correlationId === 'corr-9');
      assert.equal(h.client.state, 'closed');
      mock.timers.tick(120_000);
      await settle();
      assert.equal(h.sockets.length, 1, 'no second socket');
      assert.equal(h.events.at(-1).type, 'closed');
      assert.equal(h.events.at(-1).detail.code, code);
    });
  }

  test('a failed first connection rejects without retrying', async () => {
    const h = harness();
    const ready = h.client.connect();
    await settle();
    refuse(h.sockets[0]);
    await assert.rejects(ready, (e) => e.code === 'connection_failed');
    mock.timers.tick(60_000);
    assert.equal(h.sockets.length, 1);
  });

  test('no ready within connectTimeoutMs fails the connection', async () => {
    const h = harness({ connectTimeoutMs: 2000 });
    const ready = h.client.connect();
    await settle();
    h.sockets[0].open();
    mock.timers.tick(1999);
    assert.equal(h.client.state, 'connecting');
    mock.timers.tick(1);
    await assert.rejects(ready, (e) => e.code === 'connection_failed');
    assert.equal(h.sockets[0].closedByClient?.code, 4000);
  });

  test('defaultUrl follows the page protocol', () => {
    assert.equal(defaultUrl({ protocol: 'https:', host: 'gw.example' }), 'wss://gw.example/ws');
    assert.equal(defaultUrl({ protocol: 'http:', host: '127.0.0.1:8080' }), 'ws://127.0.0.1:8080/ws');
  });

  test('ping is answered by pong; a missing pong replaces the socket', async () => {
    const h = await connected({ pingIntervalMs: 1000, pongTimeoutMs: 500 });
    mock.timers.tick(1000);
    assert.deepEqual(h.ws.ofType('ping'), [{ type: 'ping' }]);
    h.ws.receive({ type: 'pong' });
    mock.timers.tick(600);
    assert.equal(h.client.state, 'ready', 'pong arrived: still connected');
    mock.timers.tick(400); // second ping, never answered
    assert.equal(h.ws.ofType('ping').length, 2);
    mock.timers.tick(500);
    assert.equal(h.client.state, 'reconnecting');
    assert.equal(h.ws.closedByClient?.code, 4000);
    h.client.close();
  });
});

describe('outbound call', () => {
  test('offer, call, answer, trickle both ways, progress, ended: in order', async () => {
    const h = await connected();
    const call = h.client.call('+15551234567');
    assert.equal(call.state, 'new');
    assert.equal(call.direction, 'outbound');
    const seen = record(call);
    await settle();
    const pc = h.pcs[0];
    assert.deepEqual(h.mic.constraints, [{ audio: true, video: false }]);
    assert.deepEqual(pc.config, { iceServers: READY.ice_servers }, 'ICE servers only from ready');
    assert.deepEqual(pc.log.slice(0, 3), ['addTrack', 'createOffer', 'setLocal:offer']);
    const [callMsg] = h.ws.ofType('call');
    assert.deepEqual(callMsg, { type: 'call', call_id: call.id, to: '+15551234567', sdp: 'v=0\r\no=fake-offer\r\n' });
    assert.match(call.id, /^[A-Za-z0-9_.-]{1,64}$/);
    assert.equal(call.state, 'calling');

    // Local candidates trickle, then end of candidates.
    const host = { candidate: 'candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host', sdpMid: '0', sdpMLineIndex: 0 };
    pc.gather(host);
    pc.gather({ candidate: '', sdpMid: '0', sdpMLineIndex: 0 }); // end of a generation: not sent
    pc.gather(null);
    assert.deepEqual(h.ws.ofType('ice'), [
      { type: 'ice', call_id: call.id, candidate: host },
      { type: 'ice', call_id: call.id, candidate: null },
    ]);

    // The answer, then remote candidates that arrive before it is applied.
    const remote = { candidate: 'candidate:9 1 udp 2130706431 127.0.0.1 40000 typ host', sdpMid: '0', sdpMLineIndex: 0 };
    h.ws.receive({ type: 'answer', call_id: call.id, sdp: 'v=0 answer' });
    h.ws.receive({ type: 'ice', call_id: call.id, candidate: remote });
    h.ws.receive({ type: 'ice', call_id: call.id, candidate: null });
    await settle();
    assert.deepEqual(pc.remoteDescription, { type: 'answer', sdp: 'v=0 answer' });
    assert.deepEqual(pc.log.slice(3), ['setRemote:answer', 'addIce', 'addIce']);
    assert.deepEqual(pc.candidates, [remote, null]);

    h.ws.receive({ type: 'ringing', call_id: call.id });
    h.ws.receive({ type: 'progress', call_id: call.id });
    h.ws.receive({ type: 'answered', call_id: call.id });
    h.ws.receive({ type: 'stats', call_id: call.id, mos: 4.3, jitter_ms: 3.1, loss_pct: 0, rtt_ms: 12 });
    assert.equal(call.state, 'answered');
    assert.equal(call.lastStats.mos, 4.3);
    h.ws.receive({ type: 'ended', call_id: call.id, reason: 'remote_hangup' });

    assert.deepEqual(
      seen.filter((e) => e.type !== 'state').map((e) => e.type),
      ['answer', 'ringing', 'progress', 'answered', 'stats', 'ended'],
    );
    assert.deepEqual(
      seen.filter((e) => e.type === 'state').map((e) => e.detail.state),
      ['calling', 'ringing', 'progress', 'answered', 'ended'],
    );
    assert.equal(call.endReason, 'remote_hangup');
    assert.equal(pc.signalingState, 'closed', 'peer connection closed');
    assert.equal(h.mic.streams[0].track.stopped, true, 'microphone released');
    assert.equal(h.client.calls.size, 0);
    // Late messages for the ended call are ignored.
    h.ws.receive({ type: 'answered', call_id: call.id });
    assert.equal(seen.filter((e) => e.type === 'answered').length, 1);
    h.client.close();
  });

  test('a gateway candidate that overtakes the answer waits for it', async () => {
    const h = await connected();
    const { call, pc } = await placed(h);
    const early = { candidate: 'candidate:early 1 udp 1 127.0.0.1 40000 typ host', sdpMid: '0', sdpMLineIndex: 0 };
    h.ws.receive({ type: 'ice', call_id: call.id, candidate: early });
    await settle();
    assert.deepEqual(pc.candidates, [], 'not added before a remote description');
    h.ws.receive({ type: 'answer', call_id: call.id, sdp: 'v=0 answer' });
    await settle();
    assert.deepEqual(pc.log.slice(-2), ['setRemote:answer', 'addIce']);
    assert.deepEqual(pc.candidates, [early]);
    h.client.close();
  });

  test('candidates gathered before the call message wait for it', async () => {
    const h = await connected();
    const call = h.client.call('+15551234567');
    // Gather as soon as the peer connection exists (before `call` goes out).
    await settle(2);
    const pc = h.pcs[0];
    pc.gather({ candidate: 'candidate:early', sdpMid: '0', sdpMLineIndex: 0 });
    await settle();
    assert.deepEqual(h.ws.types(), ['auth', 'call', 'ice']);
    assert.equal(h.ws.sent[2].candidate.candidate, 'candidate:early');
    call.hangup();
    h.client.close();
  });

  test('privacy is sent only when asked for', async () => {
    const h = await connected();
    await placed(h, '+15551234567', { privacy: true });
    await placed(h, '+15557654321');
    const [withheld, normal] = h.ws.ofType('call');
    assert.equal(withheld.privacy, true);
    assert.equal('privacy' in normal, false);
    h.client.close();
  });

  test('call ids are unique; a duplicate callId is refused', async () => {
    const h = await connected();
    const ids = new Set();
    for (let i = 0; i < 5; i++) ids.add(h.client.call('+1555000000' + i).id);
    assert.equal(ids.size, 5);
    h.client.call('+15550000009', { callId: 'mine' });
    assert.throws(() => h.client.call('+15550000009', { callId: 'mine' }), (e) => e.code === 'conflict');
    assert.throws(() => h.client.call('+1', { callId: 'bad id!' }), (e) => e.code === 'bad_request');
    assert.throws(() => h.client.call(''), (e) => e.code === 'bad_request');
    h.client.close();
  });

  test('call() before connect() throws not_connected', () => {
    const h = harness();
    assert.throws(() => h.client.call('+15551234567'), (e) => e.code === 'not_connected');
  });

  test('hangup sends hangup and ends on the server confirmation', async () => {
    const h = await connected();
    const { call, seen, pc } = await placed(h);
    h.ws.receive({ type: 'answered', call_id: call.id });
    call.hangup();
    assert.deepEqual(h.ws.ofType('hangup'), [{ type: 'hangup', call_id: call.id }]);
    assert.equal(pc.signalingState, 'closed', 'media released at once');
    assert.equal(call.state, 'answered', 'ended only when the server says so');
    h.ws.receive({ type: 'ended', call_id: call.id, reason: 'hangup' });
    const ended = seen.filter((e) => e.type === 'ended');
    assert.deepEqual(ended.map((e) => e.detail), [{ type: 'ended', call_id: call.id, reason: 'hangup' }]);
    h.client.close();
  });

  test('after hangup only the confirmation counts', async () => {
    const h = await connected();
    const { call, seen, pc } = await placed(h);
    h.ws.receive({ type: 'answer', call_id: call.id, sdp: 'v=0 answer' });
    await settle();
    call.hangup();
    seen.length = 0;
    h.ws.receive({ type: 'ice', call_id: call.id, candidate: { candidate: 'candidate:late', sdpMid: '0', sdpMLineIndex: 0 } });
    h.ws.receive({ type: 'answered', call_id: call.id });
    await settle();
    assert.deepEqual(seen, [], 'no state change, no error from the closed peer connection');
    assert.deepEqual(pc.candidates, []);
    h.ws.receive({ type: 'ended', call_id: call.id, reason: 'hangup' });
    assert.deepEqual(seen.map((e) => e.type), ['state', 'ended']);
    h.client.close();
  });

  test('hangup ends locally when the server stays silent', async () => {
    const h = await connected({ hangupTimeoutMs: 3000 });
    const { call, seen } = await placed(h);
    call.hangup();
    call.hangup(); // twice: one message
    assert.equal(h.ws.ofType('hangup').length, 1);
    mock.timers.tick(2999);
    assert.equal(call.state, 'calling');
    mock.timers.tick(1);
    assert.equal(call.state, 'ended');
    assert.deepEqual(seen.find((e) => e.type === 'ended').detail, {
      type: 'ended',
      call_id: call.id,
      reason: 'hangup',
      local: true,
    });
    h.client.close();
  });

  test('hangup before the call message is sent tells the server nothing', async () => {
    const h = await connected();
    const call = h.client.call('+15551234567');
    const seen = record(call);
    call.hangup();
    await settle();
    assert.deepEqual(h.ws.types(), ['auth']);
    assert.equal(seen.find((e) => e.type === 'ended').detail.reason, 'hangup');
    assert.equal(h.mic.streams[0].track.stopped, true, 'the late microphone is released');
    h.client.close();
  });

  test('a refused call reports the error, then ended', async () => {
    const h = await connected();
    const { call, seen } = await placed(h, '+99912345');
    h.ws.receive({
      type: 'error',
      code: 'forbidden',
      message: 'no dial plan route for +99912345',
      correlation_id: 'corr-1',
      call_id: call.id,
    });
    h.ws.receive({ type: 'ended', call_id: call.id, reason: 'forbidden' });
    const error = seen.find((e) => e.type === 'error').detail;
    assert.ok(error instanceof CallbridgeError);
    assert.equal(error.code, 'forbidden');
    assert.equal(error.correlationId, 'corr-1');
    assert.equal(error.callId, call.id);
    assert.equal(seen.at(-1).type, 'ended');
    assert.equal(call.endReason, 'forbidden');
    assert.equal(h.events.filter((e) => e.type === 'error').length, 0, 'not a session error');
    h.client.close();
  });

  test('busy carries the SIP status', async () => {
    const h = await connected();
    const { call } = await placed(h);
    h.ws.receive({ type: 'ended', call_id: call.id, reason: 'busy', sip_status: 486 });
    assert.equal(call.endReason, 'busy');
    assert.equal(call.sipStatus, 486);
    h.client.close();
  });

  test('an error without call_id goes to the client', async () => {
    const h = await connected();
    h.ws.receive({ type: 'error', code: 'rate_limited', message: 'slow down', correlation_id: 'c', retry_after_ms: 1500 });
    const [error] = h.events.filter((e) => e.type === 'error').map((e) => e.detail);
    assert.equal(error.code, 'rate_limited');
    assert.equal(error.retryAfterMs, 1500);
    h.client.close();
  });

  test('a refused microphone ends the call without a call message', async () => {
    const h = await connected({}, { fail: new Error('NotAllowedError') });
    const call = h.client.call('+15551234567');
    const seen = record(call);
    await settle();
    assert.deepEqual(h.ws.types(), ['auth']);
    assert.equal(seen.find((e) => e.type === 'error').detail.code, 'media');
    assert.deepEqual(seen.at(-1).detail, { type: 'ended', call_id: call.id, reason: 'error', local: true });
    h.client.close();
  });

  test('unknown types, unknown call ids and non-JSON frames are ignored', async () => {
    const h = await connected();
    const { call, seen } = await placed(h);
    seen.length = 0;
    h.ws.receive({ type: 'recording_started', call_id: call.id, future: true });
    h.ws.receive({ type: 'ringing', call_id: 'someone-else' });
    h.ws.receiveText('not json');
    h.ws.receiveText('{"no":"type"}');
    assert.equal(call.state, 'calling');
    assert.deepEqual(seen, []);
    assert.equal(h.client.state, 'ready');
    h.client.close();
  });
});

describe('during a call', () => {
  test('dtmf, hold and unhold send their messages', async () => {
    const h = await connected();
    const { call, seen } = await placed(h);
    h.ws.receive({ type: 'answered', call_id: call.id });
    call.dtmf('12#*ab');
    call.hold();
    call.hold(); // already held: no second message
    call.unhold();
    assert.deepEqual(h.ws.sent.slice(2), [
      { type: 'dtmf', call_id: call.id, digits: '12#*AB' },
      { type: 'hold', call_id: call.id },
      { type: 'unhold', call_id: call.id },
    ]);
    assert.deepEqual(
      seen.filter((e) => e.type === 'hold').map((e) => e.detail.held),
      [true, false],
    );
    assert.throws(() => call.dtmf('12x'), (e) => e.code === 'bad_request');
    assert.throws(() => call.dtmf(''), (e) => e.code === 'bad_request');
    h.client.close();
  });

  test('dtmf before the call is placed is refused', async () => {
    const h = await connected();
    const call = h.client.call('+15551234567');
    assert.throws(() => call.dtmf('1'), (e) => e.code === 'bad_request');
    call.hangup();
    h.client.close();
  });

  test('mute and hold disable the microphone track; no message for mute', async () => {
    const h = await connected();
    const { call } = await placed(h);
    const track = h.mic.streams[0].track;
    call.mute(true);
    assert.equal(track.enabled, false);
    assert.equal(call.muted, true);
    call.hold();
    call.mute(false);
    assert.equal(track.enabled, false, 'still held');
    call.unhold();
    assert.equal(track.enabled, true);
    assert.equal(h.ws.sent.filter((m) => m.type === 'mute').length, 0);
    h.client.close();
  });

  test('the server error for an unsupported request reaches the call', async () => {
    const h = await connected();
    const { call, seen } = await placed(h);
    call.dtmf('5');
    h.ws.receive({
      type: 'error',
      code: 'bad_request',
      message: 'dtmf, hold and unhold are not supported by this gateway version yet',
      correlation_id: 'x',
      call_id: call.id,
    });
    assert.equal(seen.find((e) => e.type === 'error').detail.code, 'bad_request');
    assert.equal(call.state, 'calling', 'the call goes on');
    h.client.close();
  });
});

describe('incoming call', () => {
  const INCOMING = { type: 'incoming', call_id: 'i-7', from: '+15557654321', to: '+15550001000', sdp: 'v=0 gateway offer' };

  test('accept answers the offer, trickles, and reaches answered', async () => {
    const h = await connected();
    /** @type {any} */
    let incoming = null;
    h.client.on('incoming', (call) => (incoming = call));
    h.ws.receive(INCOMING);
    assert.ok(incoming);
    assert.equal(incoming.id, 'i-7');
    assert.equal(incoming.direction, 'inbound');
    assert.equal(incoming.from, '+15557654321');
    assert.equal(incoming.to, '+15550001000');
    assert.equal(incoming.state, 'incoming');
    const seen = record(incoming);
    // The gateway's candidate comes before the user accepts.
    const remote = { candidate: 'candidate:9 1 udp 1 127.0.0.1 40000 typ host', sdpMid: '0', sdpMLineIndex: 0 };
    h.ws.receive({ type: 'ice', call_id: 'i-7', candidate: remote });

    const accepted = incoming.accept();
    assert.equal(incoming.state, 'accepting');
    await accepted;
    const pc = h.pcs[0];
    assert.deepEqual(pc.config, { iceServers: READY.ice_servers });
    assert.deepEqual(pc.log, ['setRemote:offer', 'addIce', 'addTrack', 'createAnswer', 'setLocal:answer']);
    assert.deepEqual(pc.remoteDescription, { type: 'offer', sdp: 'v=0 gateway offer' });
    assert.deepEqual(h.ws.ofType('accept'), [{ type: 'accept', call_id: 'i-7', sdp: 'v=0\r\no=fake-answer\r\n' }]);
    pc.gather({ candidate: 'candidate:local', sdpMid: '0', sdpMLineIndex: 0 });
    assert.deepEqual(h.ws.types().slice(-2), ['accept', 'ice']);

    h.ws.receive({ type: 'answered', call_id: 'i-7' });
    assert.equal(incoming.state, 'answered');
    incoming.hangup();
    assert.deepEqual(h.ws.ofType('hangup'), [{ type: 'hangup', call_id: 'i-7' }]);
    h.ws.receive({ type: 'ended', call_id: 'i-7', reason: 'hangup' });
    assert.deepEqual(
      seen.filter((e) => e.type === 'state').map((e) => e.detail.state),
      ['accepting', 'answered', 'ended'],
    );
    h.client.close();
  });

  test('reject sends reject and ends with the server ended', async () => {
    const h = await connected();
    h.ws.receive(INCOMING);
    const call = h.client.calls.get('i-7');
    const seen = record(call);
    call.reject();
    assert.deepEqual(h.ws.ofType('reject'), [{ type: 'reject', call_id: 'i-7' }]);
    await assert.rejects(call.accept(), (e) => e.code === 'bad_request', 'no accept after reject');
    assert.equal(h.pcs.length, 0, 'no media for a rejected call');
    h.ws.receive({ type: 'ended', call_id: 'i-7', reason: 'rejected' });
    assert.equal(seen.at(-1).detail.reason, 'rejected');
    assert.equal(call.state, 'ended');
    h.client.close();
  });

  test('hangup on a ringing incoming call rejects it', async () => {
    const h = await connected();
    h.ws.receive(INCOMING);
    h.client.calls.get('i-7').hangup();
    assert.deepEqual(h.ws.ofType('reject'), [{ type: 'reject', call_id: 'i-7' }]);
    h.client.close();
  });

  test('answered elsewhere ends the ringing call', async () => {
    const h = await connected();
    h.ws.receive(INCOMING);
    const call = h.client.calls.get('i-7');
    h.ws.receive({ type: 'ended', call_id: 'i-7', reason: 'answered_elsewhere' });
    assert.equal(call.state, 'ended');
    assert.equal(call.endReason, 'answered_elsewhere');
    h.client.close();
  });

  test('a refused microphone rejects the incoming call', async () => {
    const h = await connected({}, { fail: new Error('NotAllowedError') });
    h.ws.receive(INCOMING);
    const call = h.client.calls.get('i-7');
    await assert.rejects(call.accept(), (e) => e.code === 'media');
    assert.deepEqual(h.ws.ofType('reject'), [{ type: 'reject', call_id: 'i-7' }]);
    assert.equal(call.state, 'ended');
    h.client.close();
  });
});

describe('reconnect and resume', () => {
  test('a dropped socket is resumed after the backoff; the call survives', async () => {
    const h = await connected();
    const { call, seen } = await placed(h);
    h.ws.receive({ type: 'answered', call_id: call.id });

    h.ws.serverClose(1006);
    assert.equal(h.client.state, 'reconnecting');
    assert.deepEqual(h.events.find((e) => e.type === 'disconnected').detail, { code: 1006, reason: '' });
    assert.deepEqual(h.events.find((e) => e.type === 'reconnecting').detail, { attempt: 1, delayMs: 500, mode: 'resume' });
    // Messages meanwhile are kept for the new socket.
    call.dtmf('9');
    mock.timers.tick(499);
    await settle();
    assert.equal(h.sockets.length, 1, 'waits for the backoff');
    mock.timers.tick(1);
    await settle();
    assert.equal(h.sockets.length, 2);
    const again = h.sockets[1];
    again.open();
    assert.deepEqual(again.sent, [{ type: 'resume', session_id: 's-1', resume_token: 'rt-1', token: 'jwt-1' }]);
    again.receive({ ...READY, resume_token: 'rt-2' });
    assert.equal(h.client.state, 'ready');
    assert.deepEqual(again.types(), ['resume', 'dtmf'], 'the queued dtmf goes out after ready');
    assert.equal(h.events.filter((e) => e.type === 'ready').at(-1).detail.resumed, true);
    assert.equal(call.state, 'answered');
    assert.equal(seen.filter((e) => e.type === 'ended').length, 0);
    // The next resume uses the new token.
    again.serverClose(1006);
    mock.timers.tick(500);
    await settle();
    h.sockets[2].open();
    assert.deepEqual(h.sockets[2].sent[0], { type: 'resume', session_id: 's-1', resume_token: 'rt-2', token: 'jwt-1' });
    h.client.close();
  });

  test('backoff doubles up to the maximum, with jitter', async () => {
    const random = mock.fn(() => 0.5);
    const h = await connected({
      random,
      reconnect: { initialDelayMs: 500, maxDelayMs: 4000, factor: 2, jitter: 0.4, maxAttempts: 10 },
      resumeGraceMs: 600_000,
    });
    h.ws.serverClose(1006);
    for (let i = 1; i < 6; i++) {
      mock.timers.tick(h.events.filter((e) => e.type === 'reconnecting').at(-1).detail.delayMs);
      await settle();
      refuse(h.sockets[i]);
    }
    const delays = h.events.filter((e) => e.type === 'reconnecting').map((e) => e.detail.delayMs);
    // base 500, 1000, 2000, 4000, 4000, 4000; jitter removes 0.4 * 0.5 = 20 %.
    assert.deepEqual(delays, [400, 800, 1600, 3200, 3200, 3200]);
    assert.equal(h.client.backoffDelay(0), 400);
    h.client.close();
  });

  test('a refused resume ends the calls with signaling_lost, then authenticates again', async () => {
    const h = await connected();
    const { call, seen } = await placed(h);
    h.ws.receive({ type: 'answered', call_id: call.id });
    h.ws.serverClose(1006);
    mock.timers.tick(500);
    await settle();
    const resume = h.sockets[1];
    resume.open();
    resume.receive({ type: 'error', code: 'unauthorized', message: 'unknown or expired session', correlation_id: 'c' });
    resume.serverClose(4001, 'unknown or expired session');
    assert.deepEqual(seen.at(-1).detail, { type: 'ended', call_id: call.id, reason: 'signaling_lost', local: true });
    assert.equal(h.pcs[0].signalingState, 'closed');
    await settle();
    assert.equal(h.sockets.length, 3, 'a fresh socket at once');
    h.sockets[2].open();
    assert.deepEqual(h.sockets[2].sent, [{ type: 'auth', token: 'jwt-1' }]);
    h.sockets[2].receive({ ...READY, session_id: 's-2' });
    assert.equal(h.client.state, 'ready');
    assert.equal(h.client.sessionId, 's-2');
    h.client.close();
  });

  test('a refused resume then a refused token: closed, no reconnect loop', async () => {
    const h = await connected();
    h.ws.serverClose(1006);
    mock.timers.tick(500);
    await settle();
    h.sockets[1].open();
    h.sockets[1].receive({ type: 'error', code: 'unauthorized', message: 'unknown or expired session', correlation_id: 'c' });
    h.sockets[1].serverClose(4001);
    await settle();
    h.sockets[2].open();
    assert.equal(h.sockets[2].sent[0].type, 'auth');
    h.sockets[2].receive({ type: 'error', code: 'unauthorized', message: 'token expired', correlation_id: 'c' });
    h.sockets[2].serverClose(4001, 'token expired');
    assert.equal(h.client.state, 'closed');
    assert.equal(h.events.at(-1).detail.error.code, 'unauthorized');
    mock.timers.tick(120_000);
    await settle();
    assert.equal(h.sockets.length, 3, 'no further attempts');
  });

  test('close 4003 on a ready session is final', async () => {
    const h = await connected();
    const { call } = await placed(h);
    h.ws.serverClose(4003, 'scope revoked');
    assert.equal(h.client.state, 'closed');
    assert.equal(call.endReason, 'signaling_lost');
    mock.timers.tick(120_000);
    await settle();
    assert.equal(h.sockets.length, 1);
  });

  test('a rate-limited resume is tried again later; the calls stay', async () => {
    const h = await connected();
    const { call } = await placed(h);
    h.ws.serverClose(1006);
    mock.timers.tick(500);
    await settle();
    h.sockets[1].open();
    h.sockets[1].receive({ type: 'error', code: 'rate_limited', message: 'slow down', correlation_id: 'c', retry_after_ms: 1000 });
    h.sockets[1].serverClose(4029, 'rate limited');
    assert.equal(call.state, 'calling');
    assert.equal(h.client.state, 'reconnecting');
    mock.timers.tick(1000);
    await settle();
    h.sockets[2].open();
    assert.equal(h.sockets[2].sent[0].type, 'resume');
    h.client.close();
  });

  test('gives up after maxAttempts: closed, calls end with signaling_lost', async () => {
    const h = await connected({ reconnect: { maxAttempts: 3 }, resumeGraceMs: 600_000 });
    const { call } = await placed(h);
    h.ws.serverClose(1001, 'server shutting down');
    for (let i = 1; i <= 3; i++) {
      mock.timers.tick(10_000);
      await settle();
      refuse(h.sockets[i]);
    }
    assert.equal(h.client.state, 'closed');
    assert.equal(call.endReason, 'signaling_lost');
    assert.equal(h.events.at(-1).type, 'closed');
    mock.timers.tick(60_000);
    await settle();
    assert.equal(h.sockets.length, 4, 'no more attempts');
  });

  test('calls end after the resume grace even while reconnecting', async () => {
    const h = await connected({ resumeGraceMs: 5000, reconnect: { initialDelayMs: 2000, maxDelayMs: 2000, jitter: 0 } });
    const { call } = await placed(h);
    h.ws.serverClose(1006);
    mock.timers.tick(2000);
    await settle();
    refuse(h.sockets[1]);
    mock.timers.tick(2000);
    await settle();
    refuse(h.sockets[2]);
    assert.equal(call.state, 'calling');
    mock.timers.tick(1000); // 5 s since the drop
    assert.equal(call.endReason, 'signaling_lost');
    mock.timers.tick(1000);
    await settle();
    h.sockets[3].open();
    assert.equal(h.sockets[3].sent[0].type, 'auth', 'a lost session is not resumed');
    h.client.close();
  });

  test('the server grace from ready overrides the option', async () => {
    const h = harness({ resumeGraceMs: 30_000, reconnect: { initialDelayMs: 60_000, maxDelayMs: 60_000, jitter: 0 } });
    const ready = h.client.connect();
    await settle();
    h.sockets[0].open();
    h.sockets[0].receive({ ...READY, resume_grace_ms: 1000 });
    await ready;
    const { call } = await placed({ ...h, ws: h.sockets[0] });
    h.sockets[0].serverClose(1006);
    mock.timers.tick(1000);
    assert.equal(call.endReason, 'signaling_lost');
    h.client.close();
  });

  test('a resumed ready that lists calls ends the ones the server lost', async () => {
    const h = await connected();
    const kept = (await placed(h)).call;
    const lost = (await placed(h)).call;
    h.ws.serverClose(1006);
    mock.timers.tick(500);
    await settle();
    h.sockets[1].open();
    h.sockets[1].receive({ ...READY, calls: [kept.id, 'c-orphan'] });
    assert.equal(kept.state, 'calling');
    assert.equal(lost.endReason, 'signaling_lost');
    assert.deepEqual(h.sockets[1].ofType('hangup'), [{ type: 'hangup', call_id: 'c-orphan' }]);
    h.client.close();
  });

  test('dropConnection() reconnects and resumes', async () => {
    const h = await connected();
    h.client.dropConnection();
    assert.equal(h.ws.closedByClient?.code, 3000);
    assert.equal(h.client.state, 'reconnecting');
    mock.timers.tick(500);
    await settle();
    h.sockets[1].open();
    assert.equal(h.sockets[1].sent[0].type, 'resume');
    h.client.close();
  });

  test('close() hangs up, closes 1000 and never reconnects', async () => {
    const h = await connected();
    const { call } = await placed(h);
    h.client.close();
    assert.deepEqual(h.ws.ofType('hangup'), [{ type: 'hangup', call_id: call.id }]);
    assert.equal(h.ws.closedByClient?.code, 1000);
    assert.equal(call.endReason, 'hangup');
    assert.equal(h.client.state, 'closed');
    h.ws.serverClose(1000);
    mock.timers.tick(60_000);
    await settle();
    assert.equal(h.sockets.length, 1);
  });

  test('reconnect: false closes on the first drop', async () => {
    const h = await connected({ reconnect: false });
    const { call } = await placed(h);
    h.ws.serverClose(1006);
    assert.equal(h.client.state, 'closed');
    assert.equal(call.endReason, 'signaling_lost');
  });
});

describe('goaway (the instance drains)', () => {
  test('an idle session moves at once: a new session through the same URL after retry_after_ms', async () => {
    const h = await connected();
    /** @type {any[]} */
    const goaways = [];
    h.client.on('goaway', (d) => goaways.push(d));
    h.ws.receive({ type: 'goaway', reason: 'draining', retry_after_ms: 700 });
    assert.deepEqual(goaways, [{ reason: 'draining', retryAfterMs: 700, calls: 0 }]);
    assert.deepEqual(h.ws.closedByClient, { code: 1000, reason: 'moving to another instance' });
    assert.equal(h.client.state, 'reconnecting');
    assert.deepEqual(h.events.filter((e) => e.type === 'reconnecting').at(-1).detail, {
      attempt: 0,
      delayMs: 700,
      mode: 'auth',
      reason: 'goaway',
    });
    assert.equal(h.client.sessionId, null, 'the draining session is not resumed');
    mock.timers.tick(699);
    await settle();
    assert.equal(h.sockets.length, 1, 'waits retry_after_ms');
    mock.timers.tick(1);
    await settle();
    assert.equal(h.sockets.length, 2);
    const moved = h.sockets[1];
    assert.equal(moved.url, 'ws://gw.test/ws');
    moved.open();
    assert.deepEqual(moved.sent, [{ type: 'auth', token: 'jwt-1' }], 'a new session, not a resume');
    moved.receive({ ...READY, session_id: 's-2', resume_token: 'rt-9' });
    assert.equal(h.client.state, 'ready');
    assert.equal(h.client.sessionId, 's-2');
    // The old socket's late close changes nothing.
    h.ws.serverClose(1001, 'server shutting down');
    assert.equal(h.client.state, 'ready');
    assert.equal(h.sockets.length, 2);
    h.client.close();
  });

  test('a session with a call keeps its socket until the call ends, then moves', async () => {
    const h = await connected();
    const { call } = await placed(h);
    h.ws.receive({ type: 'answered', call_id: call.id });
    h.ws.receive({ type: 'goaway', reason: 'draining', retry_after_ms: 0 });
    assert.equal(h.ws.closedByClient, null, 'the call keeps the socket');
    assert.equal(h.client.state, 'ready');
    call.dtmf('5');
    assert.deepEqual(h.ws.types().at(-1), 'dtmf', 'the call goes on');
    h.ws.receive({ type: 'ended', call_id: call.id, reason: 'remote_hangup' });
    assert.equal(call.state, 'ended');
    assert.deepEqual(h.ws.closedByClient, { code: 1000, reason: 'moving to another instance' });
    mock.timers.tick(0);
    await settle();
    assert.equal(h.sockets.length, 2);
    h.sockets[1].open();
    assert.deepEqual(h.sockets[1].sent, [{ type: 'auth', token: 'jwt-1' }]);
    h.client.close();
  });
});

describe('token lifetime', () => {
  // Date is faked too: the refresh is scheduled from `expires_at` (Unix seconds).
  const T0 = 1_800_000_000;
  beforeEach(() => {
    mock.timers.reset();
    mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 * 1000 });
  });

  /** A client whose token function hands out `fresh-1`, `fresh-2`, … */
  async function refreshing(exp, options = {}) {
    let n = 0;
    const token = mock.fn(async () => `fresh-${++n}`);
    // No application pings: a long tick would otherwise also time out their pongs.
    const h = harness({ token, pingIntervalMs: 0, ...options });
    h.client.on('reauthed', (detail) => h.events.push({ type: 'reauthed', detail }));
    const ready = h.client.connect();
    await settle();
    h.sockets[0].open();
    h.sockets[0].receive({ ...READY, expires_at: exp });
    const info = await ready;
    return { ...h, ws: h.sockets[0], token, info };
  }

  test('refreshes 60 s before exp with reauth, then follows the fresh exp', async () => {
    const h = await refreshing(T0 + 3600);
    assert.equal(h.info.expiresAt, T0 + 3600);
    assert.equal(h.token.mock.callCount(), 1, 'auth only');
    mock.timers.tick(3540_000 - 1);
    await settle();
    assert.deepEqual(h.ws.ofType('reauth'), [], 'not before exp - 60 s');
    mock.timers.tick(1);
    await settle();
    assert.deepEqual(h.ws.ofType('reauth'), [{ type: 'reauth', token: 'fresh-2' }]);
    const turn = [{ urls: ['turn:gw.example:3478?transport=udp'], username: `${T0 + 7200}:alice`, credential: 'pw2' }];
    h.ws.receive({ type: 'reauthed', expires_at: T0 + 7200, ice_servers: turn });
    assert.equal(h.client.expiresAt, T0 + 7200);
    assert.deepEqual(h.client.iceServers, turn, 'fresh TURN credentials for new calls');
    assert.deepEqual(h.events.at(-1), { type: 'reauthed', detail: { expiresAt: T0 + 7200, iceServers: turn } });
    // The next refresh: 60 s before the new exp.
    mock.timers.tick(3600_000 - 1);
    await settle();
    assert.equal(h.ws.ofType('reauth').length, 1);
    mock.timers.tick(1);
    await settle();
    assert.deepEqual(h.ws.ofType('reauth').at(-1), { type: 'reauth', token: 'fresh-3' });
    h.client.close();
  });

  test('a short token refreshes when 10 % of its life is left', async () => {
    const h = await refreshing(T0 + 100);
    mock.timers.tick(89_999);
    await settle();
    assert.equal(h.ws.ofType('reauth').length, 0);
    mock.timers.tick(1);
    await settle();
    assert.equal(h.ws.ofType('reauth').length, 1);
    h.client.close();
  });

  test('a refused refresh is reported and tried again halfway to exp', async () => {
    const h = await refreshing(T0 + 1000);
    mock.timers.tick(940_000);
    await settle();
    assert.equal(h.ws.ofType('reauth').length, 1);
    h.ws.receive({ type: 'error', code: 'forbidden', message: 'the token lacks scope `calls:inbound`', correlation_id: 'c' });
    const error = h.events.filter((e) => e.type === 'error').at(-1).detail;
    assert.equal(error.code, 'forbidden');
    assert.equal(h.client.state, 'ready', 'the session goes on until exp');
    mock.timers.tick(29_999); // 60 s left: next try after 30 s
    await settle();
    assert.equal(h.ws.ofType('reauth').length, 1);
    mock.timers.tick(1);
    await settle();
    assert.deepEqual(h.ws.ofType('reauth').at(-1), { type: 'reauth', token: 'fresh-3' });
    h.client.close();
  });

  test('closed 4001 at exp, the client resumes with a fresh token and the call survives', async () => {
    const h = await refreshing(T0 + 1000);
    const { call, seen } = await placed(h);
    h.ws.receive({ type: 'answered', call_id: call.id });
    // The device slept through the refresh: the server closes at exp.
    h.ws.receive({ type: 'error', code: 'unauthorized', message: 'token expired; send reauth…', correlation_id: 'c' });
    h.ws.serverClose(4001, 'token expired');
    assert.equal(h.client.state, 'reconnecting');
    mock.timers.tick(500);
    await settle();
    const again = h.sockets[1];
    again.open();
    assert.equal(again.sent[0].type, 'resume');
    assert.equal(again.sent[0].token, `fresh-${h.token.mock.callCount()}`, 'a token fetched for this resume');
    assert.ok(h.token.mock.callCount() >= 2);
    again.receive({ ...READY, resume_token: 'rt-2', expires_at: T0 + 5000 });
    assert.equal(h.client.state, 'ready');
    assert.equal(h.client.expiresAt, T0 + 5000);
    assert.equal(call.state, 'answered');
    assert.equal(seen.filter((e) => e.type === 'ended').length, 0);
    h.client.close();
  });

  test('a fixed token is never refreshed; close 4001 at exp is final', async () => {
    const h = await connected({ pingIntervalMs: 0 });
    h.ws.receive({ type: 'reauthed', expires_at: T0 + 10 }); // ignored without a pending refresh too
    mock.timers.tick(3600_000);
    await settle();
    assert.deepEqual(h.ws.ofType('reauth'), []);
    h.ws.serverClose(4001, 'token expired');
    assert.equal(h.client.state, 'closed');
    mock.timers.tick(60_000);
    await settle();
    assert.equal(h.sockets.length, 1, 'no reconnect with a token that cannot be refreshed');
  });
});

describe('quality', () => {
  test('audioQuality summarises inbound audio', () => {
    const report = new Map([
      ['IT01A', { type: 'inbound-rtp', kind: 'audio', packetsReceived: 990, packetsLost: 10, jitter: 0.004, audioLevel: 0.2 }],
      ['RI01', { type: 'remote-inbound-rtp', kind: 'audio', roundTripTime: 0.04 }],
    ]);
    const q = audioQuality(report);
    assert.equal(q.packetsReceived, 990);
    assert.equal(q.lossPct, 1);
    assert.equal(q.jitterMs, 4);
    assert.equal(q.rttMs, 40);
    assert.equal(q.audioLevel, 0.2);
    assert.ok(q.mos > 4 && q.mos <= 4.5, `mos ${q.mos}`);
    assert.equal(audioQuality(new Map()), null);
  });

  test('MOS falls with loss and delay', () => {
    assert.ok(estimateMos(0, 0, 0) > 4.3);
    assert.ok(estimateMos(5, 20, 100) < estimateMos(0, 0, 0));
    assert.ok(estimateMos(30, 50, 600) < 2.5);
  });
});
