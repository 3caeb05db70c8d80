/**
 * Fakes of the browser APIs that callbridge.js uses, for node's test runner:
 * a WebSocket whose "server side" the test drives, an RTCPeerConnection that records
 * what was done to it, and getUserMedia.
 */

/** Lets pending promise callbacks (and the fakes' async steps) run. */
export async function settle(rounds = 8) {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}

/**
 * Builds a fake WebSocket class; every socket it creates is pushed to `sockets`.
 *
 * @returns {{ WebSocket: typeof FakeWebSocket, sockets: FakeWebSocket[] }}
 */
export function fakeWebSockets() {
  /** @type {FakeWebSocket[]} */
  const sockets = [];
  class Ws extends FakeWebSocket {
    /** @param {string} url */
    constructor(url) {
      super(url);
      sockets.push(this);
    }
  }
  return { WebSocket: Ws, sockets };
}

/** A WebSocket whose far end is the test. */
export class FakeWebSocket extends EventTarget {
  /** @param {string} url */
  constructor(url) {
    super();
    this.url = url;
    this.readyState = 0;
    /** @type {any[]} Parsed frames the client sent. */
    this.sent = [];
    /** @type {{ code?: number, reason?: string } | null} Set when the client closed it. */
    this.closedByClient = null;
  }

  /** @param {string} text */
  send(text) {
    if (this.readyState !== 1) throw new Error(`send on a socket in readyState ${this.readyState}`);
    this.sent.push(JSON.parse(text));
  }

  /**
   * @param {number} [code]
   * @param {string} [reason]
   */
  close(code, reason) {
    this.closedByClient = { code, reason };
    this.readyState = 3;
  }

  // ---- the test's side ----

  /** The connection opens. */
  open() {
    this.readyState = 1;
    this.dispatchEvent(new Event('open'));
  }

  /** @param {object} message A frame from the server. */
  receive(message) {
    this.dispatchEvent(Object.assign(new Event('message'), { data: JSON.stringify(message) }));
  }

  /** @param {string} text A raw frame from the server. */
  receiveText(text) {
    this.dispatchEvent(Object.assign(new Event('message'), { data: text }));
  }

  /**
   * The server (or the network) closes the socket.
   *
   * @param {number} code
   * @param {string} [reason]
   */
  serverClose(code, reason = '') {
    this.readyState = 3;
    this.dispatchEvent(Object.assign(new Event('close'), { code, reason, wasClean: code !== 1006 }));
  }

  /** @returns {string[]} Types of the frames sent, in order. */
  types() {
    return this.sent.map((m) => m.type);
  }

  /**
   * @param {string} type
   * @returns {any[]} Frames of that type.
   */
  ofType(type) {
    return this.sent.filter((m) => m.type === type);
  }
}

/** A fake audio track. */
export class FakeTrack {
  constructor() {
    this.kind = 'audio';
    this.enabled = true;
    this.stopped = false;
  }

  stop() {
    this.stopped = true;
  }
}

/** A fake microphone stream with one audio track. */
export class FakeStream {
  constructor() {
    this.track = new FakeTrack();
  }

  getTracks() {
    return [this.track];
  }

  getAudioTracks() {
    return [this.track];
  }
}

/**
 * Builds a fake getUserMedia; `streams` collects what it returned.
 *
 * @param {{ fail?: Error }} [options]
 */
export function fakeGetUserMedia(options = {}) {
  /** @type {FakeStream[]} */
  const streams = [];
  /** @type {any[]} */
  const constraints = [];
  /** @param {any} c */
  const getUserMedia = async (c) => {
    constraints.push(c);
    await settle(1);
    if (options.fail) throw options.fail;
    const s = new FakeStream();
    streams.push(s);
    return s;
  };
  return { getUserMedia, streams, constraints };
}

/**
 * Builds a fake RTCPeerConnection class; every instance is pushed to `instances`.
 */
export function fakePeerConnections() {
  /** @type {FakePeerConnection[]} */
  const instances = [];
  class Pc extends FakePeerConnection {
    /** @param {any} config */
    constructor(config) {
      super(config);
      instances.push(this);
    }
  }
  return { RTCPeerConnection: Pc, instances };
}

/** An RTCPeerConnection that records the calls made on it. */
export class FakePeerConnection extends EventTarget {
  /** @param {any} config */
  constructor(config) {
    super();
    this.config = config;
    /** @type {any} */
    this.localDescription = null;
    /** @type {any} */
    this.remoteDescription = null;
    this.signalingState = 'stable';
    this.connectionState = 'new';
    /** @type {any[]} */
    this.tracks = [];
    /** @type {(object | null)[]} Remote candidates added; `null` for end of candidates. */
    this.candidates = [];
    /** @type {string[]} Operations in the order they completed. */
    this.log = [];
    /** @type {[string, any][]} What getStats() returns. */
    this.stats = [];
  }

  /**
   * @param {any} track
   * @param {any} stream
   */
  addTrack(track, stream) {
    this.tracks.push({ track, stream });
    this.log.push('addTrack');
  }

  async createOffer() {
    this.log.push('createOffer');
    return { type: 'offer', sdp: 'v=0\r\no=fake-offer\r\n' };
  }

  async createAnswer() {
    if (!this.remoteDescription) throw new Error('InvalidStateError: createAnswer before the offer');
    this.log.push('createAnswer');
    return { type: 'answer', sdp: 'v=0\r\no=fake-answer\r\n' };
  }

  /** @param {any} description */
  async setLocalDescription(description) {
    this.localDescription = description;
    this.log.push(`setLocal:${description.type}`);
  }

  /** @param {any} description */
  async setRemoteDescription(description) {
    await settle(2); // slower than a candidate's arrival, as in a browser
    this.remoteDescription = description;
    this.log.push(`setRemote:${description.type}`);
  }

  /** @param {any} [candidate] */
  async addIceCandidate(candidate) {
    if (!this.remoteDescription) throw new Error('InvalidStateError: no remote description');
    this.candidates.push(candidate ?? null);
    this.log.push('addIce');
  }

  async getStats() {
    return new Map(this.stats);
  }

  close() {
    this.signalingState = 'closed';
    this.connectionState = 'closed';
  }

  // ---- the test's side ----

  /** @param {any} candidate A local candidate (null: gathering done). */
  gather(candidate) {
    const event = Object.assign(new Event('icecandidate'), {
      candidate: candidate && { ...candidate, toJSON: () => candidate },
    });
    this.dispatchEvent(event);
  }

  /** @param {string} state */
  setConnectionState(state) {
    this.connectionState = state;
    this.dispatchEvent(new Event('connectionstatechange'));
  }
}
