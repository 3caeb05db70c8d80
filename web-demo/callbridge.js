// @ts-check
/**
 * callbridge.js: the browser client of the callbridge signaling protocol v1
 * (`docs/protocol.md`). One ES module, no dependencies, no build step.
 *
 * ```js
 * import { CallbridgeClient } from './callbridge.js';
 * const client = new CallbridgeClient({ url: 'wss://gw.example/ws', token: getJwt });
 * await client.connect();
 * const call = client.call('+15551234567');
 * call.on('answered', () => console.log('talking'));
 * call.on('ended', (m) => console.log('ended:', m.reason));
 * client.on('incoming', (call) => call.accept());
 * ```
 *
 * What it does for you: authenticates (`auth` as the first frame, never a token in the
 * URL), creates one `RTCPeerConnection` per call with the gateway's own ICE servers
 * from `ready` (never a public STUN server), trickles ICE both ways, and when the
 * socket drops it reconnects with exponential backoff and sends `resume`, so calls
 * survive. Every `Call` ends with exactly one `ended` event, whatever happens.
 *
 * Token lifetime: a session lives no longer than its JWT. Pass `token` as a function
 * (e.g. `() => fetch('/my-token').then((r) => r.text())`) and the client calls it
 * shortly before the token expires and sends `reauth`, and calls it again for every
 * `resume`; with a fixed string the session ends (close 4001) when the token expires.
 *
 * Events are DOM events (`EventTarget`); `on(type, fn)` is a shorthand that passes
 * `event.detail` and returns a function that removes the listener.
 *
 * @module callbridge
 */

/** Protocol version spoken by this client. */
export const PROTOCOL_VERSION = 1;

/** WebSocket close codes of protocol v1 after which the client does not reconnect. */
export const CloseCode = Object.freeze({
  /** The token is not valid or expired (or a `resume` was refused). */
  AUTH_FAILED: 4001,
  /** The token lacks the needed scope. */
  FORBIDDEN: 4003,
  /** No `auth` frame in time. */
  AUTH_TIMEOUT: 4008,
  /** Rate limited (the client does reconnect, with backoff). */
  RATE_LIMITED: 4029,
});

/** Close codes that end the client for good: a new token is needed. */
/** @type {number[]} */
const FATAL_CLOSE_CODES = [CloseCode.AUTH_FAILED, CloseCode.FORBIDDEN, CloseCode.AUTH_TIMEOUT];

/** Digits accepted by `Call.dtmf()`. */
const DTMF_DIGITS = /^[0-9A-D*#]+$/;

/** Client-chosen call ids: 1-64 characters of `[A-Za-z0-9_.-]`. */
const CALL_ID = /^[A-Za-z0-9_.-]{1,64}$/;

/**
 * Reconnection policy. The n-th attempt (n from 0) waits
 * `min(maxDelayMs, initialDelayMs * factor ** n) * (1 - jitter * random())`.
 *
 * @typedef {object} ReconnectOptions
 * @property {number} [initialDelayMs=500] Delay before the first attempt.
 * @property {number} [maxDelayMs=8000] Upper bound of a delay.
 * @property {number} [factor=2] Growth per attempt.
 * @property {number} [jitter=0.3] Fraction of the delay removed at random (0 to 1).
 * @property {number} [maxAttempts=12] Attempts without a `ready` before giving up.
 */

/**
 * Options of {@link CallbridgeClient}.
 *
 * @typedef {object} ClientOptions
 * @property {string | (() => string | Promise<string>)} token The JWT, or a function
 *   returning a fresh one: called for every `auth` and `resume`, and before the
 *   current token expires (then sent as `reauth`, so the session outlives the token).
 *   A fixed string cannot be refreshed: the session ends when it expires.
 * @property {number} [refreshBeforeMs=60000] Refresh the token this long before its
 *   `exp` (at most 10 % of the token's remaining life, so short tokens refresh late
 *   enough to be worth it).
 * @property {string} [url] `ws(s)://host/ws`; default: `/ws` on the page's own origin.
 * @property {ReconnectOptions | false} [reconnect] Backoff policy; `false` disables.
 * @property {number} [resumeGraceMs=30000] How long calls are kept while the socket
 *   is down before they end locally with `signaling_lost` (the server's
 *   `server.resume_grace`; a `resume_grace_ms` field in `ready` overrides it).
 * @property {number} [connectTimeoutMs=10000] Wait for `ready` on a new socket.
 * @property {number} [pingIntervalMs=20000] Application `ping` interval while
 *   connected; 0 disables.
 * @property {number} [pongTimeoutMs=10000] A socket with no `pong` this long after a
 *   `ping` is considered dead and replaced.
 * @property {number} [hangupTimeoutMs=3000] After `hangup()`/`reject()`, how long to
 *   wait for the server's `ended` before ending the call locally.
 * @property {boolean | MediaTrackConstraints} [audio=true] Microphone constraints.
 * @property {{ new (url: string): WebSocket }} [WebSocket] WebSocket constructor
 *   (tests inject a fake).
 * @property {{ new (config: RTCConfiguration): RTCPeerConnection }} [RTCPeerConnection]
 *   RTCPeerConnection constructor (tests inject a fake).
 * @property {(constraints: MediaStreamConstraints) => Promise<MediaStream>} [getUserMedia]
 *   Microphone access; default `navigator.mediaDevices.getUserMedia`.
 * @property {() => number} [random=Math.random] Randomness for ids and jitter.
 */

/**
 * What `ready` told us.
 *
 * @typedef {object} SessionInfo
 * @property {string} sessionId The session id.
 * @property {string} user The authenticated user.
 * @property {RTCIceServer[]} iceServers The gateway's STUN/TURN servers.
 * @property {boolean} resumed Whether this `ready` answered a `resume`.
 * @property {number | null} expiresAt When the session's token expires (Unix
 *   seconds), if the server said.
 */

/**
 * A protocol v1 message (see `docs/protocol.md`); call events carry it as is.
 *
 * @typedef {{ type: string, call_id?: string, [field: string]: any }} Message
 */

/**
 * An `error` from the server, or a local failure, with the protocol's `code`.
 */
export class CallbridgeError extends Error {
  /**
   * @param {string} code Protocol error code (`bad_request`, `unauthorized`, …) or a
   *   local one (`not_connected`, `media`, `connection_failed`, `closed`).
   * @param {string} message What went wrong and what to do.
   * @param {{ correlationId?: string, callId?: string, retryAfterMs?: number, cause?: unknown }} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message);
    this.name = 'CallbridgeError';
    /** Machine-readable code. */
    this.code = code;
    /** The gateway's correlation id, to quote in support requests. */
    this.correlationId = extra.correlationId;
    /** The call the error is about, if any. */
    this.callId = extra.callId;
    /** For `rate_limited`: when to retry. */
    this.retryAfterMs = extra.retryAfterMs;
    /** The underlying exception of a local failure. */
    this.cause = extra.cause;
  }

  /**
   * Builds an error from a protocol `error` message.
   *
   * @param {Message} message
   * @returns {CallbridgeError}
   */
  static fromMessage(message) {
    return new CallbridgeError(String(message.code ?? 'internal'), String(message.message ?? ''), {
      correlationId: message.correlation_id,
      callId: message.call_id,
      retryAfterMs: message.retry_after_ms,
    });
  }
}

/**
 * The signaling URL on the page's own origin: `wss://host/ws` on https pages,
 * `ws://host/ws` on http pages.
 *
 * @param {{ protocol: string, host: string }} [location] Defaults to the page's.
 * @returns {string}
 */
export function defaultUrl(location = globalThis.location) {
  if (!location) throw new CallbridgeError('bad_request', 'no page location: pass options.url');
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
}

/**
 * Adds `on(type, listener)` to an `EventTarget` subclass.
 */
class Emitter extends EventTarget {
  /**
   * Listens to `type`; `listener` gets the event's `detail`.
   *
   * @param {string} type Event name.
   * @param {(detail: any, event: CustomEvent) => void} listener
   * @returns {() => void} Removes the listener.
   */
  on(type, listener) {
    /** @param {Event} event */
    const handler = (event) => listener(/** @type {CustomEvent} */ (event).detail, /** @type {CustomEvent} */ (event));
    this.addEventListener(type, handler);
    return () => this.removeEventListener(type, handler);
  }

  /**
   * Dispatches a `CustomEvent`.
   *
   * @param {string} type
   * @param {unknown} [detail]
   */
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/**
 * A connection to callbridge: authentication, reconnection, and the calls of the
 * session.
 *
 * Events (`detail` in brackets): `state` ({state}), `ready` ({@link SessionInfo}),
 * `incoming` ({@link Call}), `disconnected` ({code, reason}), `reconnecting`
 * ({attempt, delayMs, mode, reason?}), `goaway` ({reason, retryAfterMs, calls}: the
 * instance drains; the client moves to another one through the same URL, at once
 * without calls, once the last call ends with some), `closed` ({code, reason, error?}), `error`
 * ({@link CallbridgeError} not tied to a call, e.g. a refused token refresh),
 * `reauthed` ({expiresAt, iceServers}: the session now lives until the fresh token's
 * `exp`).
 *
 * `state` is one of `idle`, `connecting`, `ready`, `reconnecting`, `closed`.
 */
export class CallbridgeClient extends Emitter {
  /**
   * @param {ClientOptions} options
   */
  constructor(options) {
    super();
    if (!options || options.token === undefined) {
      throw new CallbridgeError('bad_request', 'options.token is required (a JWT or a function returning one)');
    }
    /** The options in force. */
    this.options = {
      resumeGraceMs: 30000,
      connectTimeoutMs: 10000,
      pingIntervalMs: 20000,
      pongTimeoutMs: 10000,
      hangupTimeoutMs: 3000,
      refreshBeforeMs: 60000,
      audio: /** @type {boolean | MediaTrackConstraints} */ (true),
      random: Math.random,
      ...options,
    };
    /** @type {ReconnectOptions | false} */
    this.reconnectPolicy =
      options.reconnect === false
        ? false
        : { initialDelayMs: 500, maxDelayMs: 8000, factor: 2, jitter: 0.3, maxAttempts: 12, ...options.reconnect };
    /** The signaling URL. */
    this.url = options.url ?? defaultUrl();
    /** @type {'idle' | 'connecting' | 'ready' | 'reconnecting' | 'closed'} */
    this.state = 'idle';
    /** @type {string | null} The session id from the latest `ready`. */
    this.sessionId = null;
    /** @type {string | null} The user from the latest `ready`. */
    this.user = null;
    /** @type {RTCIceServer[]} The gateway's ICE servers from the latest `ready` or `reauthed`. */
    this.iceServers = [];
    /** @type {number | null} The session token's `exp` (Unix seconds) from the latest `ready` or `reauthed`. */
    this.expiresAt = null;
    /** @type {Map<string, Call>} Live calls by call id. */
    this.calls = new Map();

    /** @type {WebSocket | null} The current socket. */
    this._ws = null;
    /** @type {'auth' | 'resume' | 'open' | null} What the current socket is doing. */
    this._mode = null;
    /** @type {string | null} Secret for `resume`. */
    this._resumeToken = null;
    /** Reconnection attempts since the last `ready`. */
    this._attempt = 0;
    /** @type {Message[]} Call messages sent while the socket was down. */
    this._outbox = [];
    /** @type {CallbridgeError | null} An `error` received before `ready`. */
    this._handshakeError = null;
    /** The first authentication of `connect()` is under way: failures are final. */
    this._initial = false;
    /** Set by `close()`: no reconnecting. */
    this._closedByUser = false;
    /** Calls placed in this client, for call ids. */
    this._callCount = 0;
    /** A `reauth` was sent and its answer is awaited. */
    this._reauthPending = false;
    /** @type {Record<string, ReturnType<typeof setTimeout> | null>} */
    this._timers = { handshake: null, reconnect: null, ping: null, pong: null, grace: null, refresh: null };
    /** Server-announced grace (ms) overriding `options.resumeGraceMs`. */
    this._serverGraceMs = /** @type {number | null} */ (null);
    /** @type {{ delayMs: number } | null} A `goaway` not yet acted on (calls still up). */
    this._goaway = null;
  }

  /**
   * Opens the socket and authenticates. Resolves with the session once `ready`
   * arrives; rejects with a {@link CallbridgeError} (`unauthorized`, `forbidden`,
   * `connection_failed`) otherwise.
   *
   * @returns {Promise<SessionInfo>}
   */
  connect() {
    if (this.state === 'ready') return Promise.resolve(this._info(false));
    /** @type {Promise<SessionInfo>} */
    const ready = new Promise((resolve, reject) => {
      const offReady = this.on('ready', (info) => {
        offReady();
        offClosed();
        resolve(info);
      });
      const offClosed = this.on('closed', ({ error }) => {
        offReady();
        offClosed();
        reject(error ?? new CallbridgeError('closed', 'client closed'));
      });
    });
    if (this.state === 'idle' || this.state === 'closed') {
      this._closedByUser = false;
      this._attempt = 0;
      this._initial = true;
      this._setState('connecting');
      this._open('auth');
    }
    return ready;
  }

  /**
   * Places an outbound call. The returned call is set up in the background
   * (microphone, offer, `call` message); failures arrive as `error` then `ended`.
   *
   * @param {string} to The number or destination to dial (e.g. `+15551234567`, `echo`).
   * @param {{ privacy?: boolean, callId?: string }} [options] `privacy` withholds the
   *   caller id; `callId` overrides the generated id.
   * @returns {Call}
   */
  call(to, options = {}) {
    if (this.state !== 'ready') {
      throw new CallbridgeError('not_connected', `cannot call while ${this.state}; await connect() first`);
    }
    if (typeof to !== 'string' || to.trim() === '') {
      throw new CallbridgeError('bad_request', 'call(to): `to` must be a non-empty string');
    }
    const id = options.callId ?? this._newCallId();
    if (!CALL_ID.test(id)) throw new CallbridgeError('bad_request', 'callId must be 1-64 characters of A-Z a-z 0-9 _ . -');
    if (this.calls.has(id)) throw new CallbridgeError('conflict', `call id ${id} is already in use`);
    const call = new Call(this, { id, direction: 'outbound', to: to.trim() });
    this.calls.set(id, call);
    call._startOutbound(Boolean(options.privacy));
    return call;
  }

  /**
   * Hangs up every call and closes the socket for good (no reconnect).
   */
  close() {
    this._closedByUser = true;
    for (const call of [...this.calls.values()]) call._closeWithClient();
    const ws = this._ws;
    this._detach();
    this._clearTimer('reconnect');
    this._clearTimer('grace');
    if (ws) ws.close(1000, 'client closed');
    this._finish(1000, 'closed by the client', null);
  }

  /**
   * Drops the socket as if the network had failed (for demos and tests): the client
   * reconnects and resumes its session.
   */
  dropConnection() {
    const ws = this._ws;
    if (!ws) return;
    ws.close(3000, 'dropped by the client');
    this._onSocketGone(ws, 1006, 'connection dropped');
  }

  // ---- sockets -------------------------------------------------------------

  /**
   * Opens a socket whose first frame is `auth` or `resume`.
   *
   * @param {'auth' | 'resume'} mode
   */
  async _open(mode) {
    /** @type {string} */
    let token;
    try {
      token = await this._freshToken();
    } catch (e) {
      this._fail(new CallbridgeError('unauthorized', `could not get a token: ${e}`, { cause: e }), 0, 'no token');
      return;
    }
    if (this._closedByUser) return;
    // The session may have been lost while the token was fetched.
    if (mode === 'resume' && this.sessionId === null) mode = 'auth';
    /** @type {Message} */
    const first =
      mode === 'resume'
        ? { type: 'resume', session_id: this.sessionId, resume_token: this._resumeToken, token }
        : { type: 'auth', token };
    const Ws = this.options.WebSocket ?? globalThis.WebSocket;
    /** @type {WebSocket} */
    let ws;
    try {
      ws = new Ws(this.url);
    } catch (e) {
      this._fail(new CallbridgeError('connection_failed', `cannot open ${this.url}: ${e}`, { cause: e }), 0, 'bad url');
      return;
    }
    this._ws = ws;
    this._mode = mode;
    this._handshakeError = null;
    ws.addEventListener('open', () => {
      if (this._ws === ws) ws.send(JSON.stringify(first));
    });
    ws.addEventListener('message', (event) => {
      if (this._ws === ws) this._onFrame(/** @type {MessageEvent} */ (event).data);
    });
    ws.addEventListener('close', (event) => {
      const { code, reason } = /** @type {CloseEvent} */ (event);
      this._onSocketGone(ws, code, reason);
    });
    this._setTimer('handshake', this.options.connectTimeoutMs, () => {
      ws.close(4000, 'no ready in time');
      this._onSocketGone(ws, 1006, `no ready within ${this.options.connectTimeoutMs} ms`);
    });
  }

  /** Forgets the current socket (its late events are ignored). */
  _detach() {
    this._ws = null;
    this._mode = null;
    this._reauthPending = false;
    this._clearTimer('handshake');
    this._clearTimer('ping');
    this._clearTimer('pong');
    this._clearTimer('refresh');
  }

  /**
   * The token to send now: the app's function is called each time.
   *
   * @returns {Promise<string>}
   */
  async _freshToken() {
    const token = this.options.token;
    return typeof token === 'function' ? await token() : token;
  }

  /**
   * Handles the end of a socket (a close event, a timeout, or `dropConnection()`).
   *
   * @param {WebSocket} ws
   * @param {number} code
   * @param {string} reason
   */
  _onSocketGone(ws, code, reason) {
    if (ws !== this._ws) return;
    const mode = this._mode;
    const handshakeError = this._handshakeError;
    this._detach();
    if (this._closedByUser) return;
    const fatal = FATAL_CLOSE_CODES.includes(code);

    if (mode === 'open') {
      this._emit('disconnected', { code, reason });
      // The token ran out (no reauth in time, e.g. the device slept): with a token
      // function, resume with a fresh token while the server keeps the calls.
      const refreshable = code === CloseCode.AUTH_FAILED && typeof this.options.token === 'function';
      if ((fatal && !refreshable) || !this.reconnectPolicy) {
        this._fail(new CallbridgeError('closed', `connection closed (${code} ${reason})`), code, reason);
        return;
      }
      this._startGrace();
      this._scheduleReconnect('resume');
      return;
    }
    if (mode === 'resume') {
      // Busy (rate limited, draining) is not a refusal: try the resume again later.
      const busy = handshakeError && ['rate_limited', 'unavailable'].includes(handshakeError.code);
      if (fatal || (handshakeError && !busy)) {
        // The server no longer knows the session: its calls are gone. It answered,
        // so authenticate again at once for a new session.
        this._sessionLost();
        this._open('auth');
      } else {
        this._scheduleReconnect('resume');
      }
      return;
    }
    // mode === 'auth'
    const error =
      handshakeError ??
      new CallbridgeError(fatal ? 'unauthorized' : 'connection_failed', `connection closed before ready (${code} ${reason})`);
    if (this._initial || fatal || !this.reconnectPolicy) {
      this._fail(error, code, reason);
    } else {
      this._scheduleReconnect('auth');
    }
  }

  /**
   * Waits (backoff) and opens a new socket, or gives up.
   *
   * @param {'auth' | 'resume'} mode
   */
  _scheduleReconnect(mode) {
    const policy = this.reconnectPolicy;
    if (!policy || this._attempt >= /** @type {number} */ (policy.maxAttempts)) {
      this._fail(new CallbridgeError('connection_failed', `gave up after ${this._attempt} reconnection attempts`), 1006, 'gave up');
      return;
    }
    const delayMs = this.backoffDelay(this._attempt);
    this._attempt += 1;
    this._setState('reconnecting');
    this._emit('reconnecting', { attempt: this._attempt, delayMs, mode });
    this._setTimer('reconnect', delayMs, () => {
      // A session lost meanwhile (grace expired) cannot be resumed.
      this._open(mode === 'resume' && this.sessionId === null ? 'auth' : mode);
    });
  }

  /**
   * The delay before reconnection attempt `attempt` (0-based), jitter included.
   *
   * @param {number} attempt
   * @returns {number} Milliseconds.
   */
  backoffDelay(attempt) {
    const p = /** @type {Required<ReconnectOptions>} */ (this.reconnectPolicy || {});
    const base = Math.min(p.maxDelayMs, p.initialDelayMs * p.factor ** attempt);
    return Math.round(base * (1 - p.jitter * this.options.random()));
  }

  /** Calls survive a dropped socket for the grace period only. */
  _startGrace() {
    const graceMs = this._serverGraceMs ?? this.options.resumeGraceMs;
    this._setTimer('grace', graceMs, () => this._sessionLost());
  }

  /** The server's session is gone: end its calls with `signaling_lost`. */
  _sessionLost() {
    this._clearTimer('grace');
    this.sessionId = null;
    this._resumeToken = null;
    this._outbox = [];
    for (const call of [...this.calls.values()]) call._endLocally('signaling_lost');
  }

  /**
   * Ends the client: `closed` state, calls ended, `connect()` rejected.
   *
   * @param {CallbridgeError | null} error
   * @param {number} code
   * @param {string} reason
   */
  _fail(error, code, reason) {
    const ws = this._ws;
    this._detach();
    if (ws) ws.close(1000, 'giving up');
    this._clearTimer('reconnect');
    this._clearTimer('grace');
    this._sessionLost();
    this._finish(code, reason, error);
  }

  /**
   * @param {number} code
   * @param {string} reason
   * @param {CallbridgeError | null} error
   */
  _finish(code, reason, error) {
    this._initial = false;
    if (this.state === 'closed') return;
    this._setState('closed');
    this._emit('closed', { code, reason, error: error ?? undefined });
  }

  // ---- frames --------------------------------------------------------------

  /**
   * Handles one text frame.
   *
   * @param {unknown} data
   */
  _onFrame(data) {
    /** @type {Message} */
    let message;
    try {
      message = JSON.parse(String(data));
    } catch {
      return; // not JSON: nothing the protocol sends
    }
    if (!message || typeof message.type !== 'string') return;
    switch (message.type) {
      case 'ready':
        this._onReady(message);
        return;
      case 'pong':
        this._clearTimer('pong');
        return;
      case 'reauthed':
        this._onReauthed(message);
        return;
      case 'error':
        this._onError(message);
        return;
      case 'incoming':
        this._onIncoming(message);
        return;
      case 'goaway':
        this._onGoaway(message);
        return;
      default: {
        const call = typeof message.call_id === 'string' ? this.calls.get(message.call_id) : undefined;
        if (call) call._handle(message);
      }
    }
  }

  /** @param {Message} message */
  _onReady(message) {
    const resumed = this._mode === 'resume';
    this._clearTimer('handshake');
    this._clearTimer('grace');
    this._mode = 'open';
    this._attempt = 0;
    this._initial = false;
    this._goaway = null;
    this.sessionId = message.session_id;
    this._resumeToken = message.resume_token;
    this.user = message.user;
    this.iceServers = toIceServers(message.ice_servers);
    this.expiresAt = typeof message.expires_at === 'number' ? message.expires_at : null;
    if (typeof message.resume_grace_ms === 'number') this._serverGraceMs = message.resume_grace_ms;
    this._setState('ready');
    this._schedulePing();
    this._scheduleRefresh();
    if (resumed) {
      // A server that lists the session's live calls lets us drop the ones it lost.
      if (Array.isArray(message.calls)) {
        for (const call of [...this.calls.values()]) {
          if (!message.calls.includes(call.id)) call._endLocally('signaling_lost');
        }
        // Calls the server kept but we gave up on (our grace ran out first).
        for (const id of message.calls) {
          if (typeof id === 'string' && !this.calls.has(id)) this._send({ type: 'hangup', call_id: id });
        }
      }
      const queued = this._outbox;
      this._outbox = [];
      for (const m of queued) if (m.call_id === undefined || this.calls.has(m.call_id)) this._send(m);
    }
    this._emit('ready', this._info(resumed));
  }

  /**
   * The instance drains: the session moves to another one (a new session through
   * the same URL, so the load balancer picks a ready instance), at once without
   * calls, once the last call ends with some; inbound calls then reach the new one.
   *
   * @param {Message} message
   */
  _onGoaway(message) {
    const delayMs = typeof message.retry_after_ms === 'number' ? Math.max(0, message.retry_after_ms) : 0;
    this._goaway = { delayMs };
    this._emit('goaway', { reason: message.reason ?? 'draining', retryAfterMs: delayMs, calls: this.calls.size });
    this._moveIfIdle();
  }

  /** After a `goaway`, once no call is left: leave this instance for a new session. */
  _moveIfIdle() {
    if (!this._goaway || this.calls.size > 0 || this._mode !== 'open') return;
    const { delayMs } = this._goaway;
    this._goaway = null;
    const ws = this._ws;
    this._detach();
    if (ws) ws.close(1000, 'moving to another instance');
    // A new session elsewhere: this one cannot be resumed there.
    this._clearTimer('grace');
    this.sessionId = null;
    this._resumeToken = null;
    this._outbox = [];
    this._setState('reconnecting');
    this._emit('reconnecting', { attempt: 0, delayMs, mode: 'auth', reason: 'goaway' });
    this._setTimer('reconnect', delayMs, () => this._open('auth'));
  }

  /** @param {Message} message */
  _onError(message) {
    const error = CallbridgeError.fromMessage(message);
    if (this._mode !== 'open') {
      this._handshakeError = error; // the close that follows decides
      return;
    }
    if (this._reauthPending && !error.callId) {
      this._reauthPending = false;
      this._reauthFailed(error);
      return;
    }
    const call = error.callId ? this.calls.get(error.callId) : undefined;
    if (call) call._onError(error);
    else this._emit('error', error);
  }

  /** @param {Message} message */
  _onIncoming(message) {
    if (typeof message.call_id !== 'string' || this.calls.has(message.call_id)) return;
    const call = new Call(this, {
      id: message.call_id,
      direction: 'inbound',
      from: message.from,
      to: message.to,
      offer: message.sdp,
    });
    this.calls.set(call.id, call);
    this._emit('incoming', call);
  }

  /**
   * Sends a message, or queues a call message while the socket is being replaced.
   *
   * @param {Message} message
   * @returns {boolean} Whether it was sent or queued.
   */
  _send(message) {
    if (this._ws && this._mode === 'open') {
      this._ws.send(JSON.stringify(message));
      return true;
    }
    if (this.state === 'reconnecting' && message.call_id !== undefined) {
      this._outbox.push(message);
      return true;
    }
    return false;
  }

  // ---- token lifetime ------------------------------------------------------

  /** Schedules the token refresh (`reauth`) before `expiresAt`, if the app can refresh. */
  _scheduleRefresh() {
    this._clearTimer('refresh');
    if (typeof this.options.token !== 'function' || this.expiresAt === null) return;
    const remainingMs = this.expiresAt * 1000 - Date.now();
    const leadMs = Math.min(this.options.refreshBeforeMs, remainingMs * 0.1);
    this._setTimer('refresh', Math.max(0, remainingMs - leadMs), () => this._reauth());
  }

  /** Fetches a fresh token and sends `reauth`. */
  async _reauth() {
    if (this._mode !== 'open') return; // the next ready reschedules
    const ws = this._ws;
    /** @type {string} */
    let token;
    try {
      token = await this._freshToken();
    } catch (e) {
      this._reauthFailed(new CallbridgeError('unauthorized', `could not get a fresh token: ${e}`, { cause: e }));
      return;
    }
    if (this._ws !== ws || this._mode !== 'open') return;
    this._reauthPending = true;
    this._send({ type: 'reauth', token });
  }

  /** @param {Message} message */
  _onReauthed(message) {
    this._reauthPending = false;
    if (typeof message.expires_at === 'number') this.expiresAt = message.expires_at;
    if (Array.isArray(message.ice_servers) && message.ice_servers.length > 0) {
      this.iceServers = toIceServers(message.ice_servers);
    }
    this._emit('reauthed', { expiresAt: this.expiresAt, iceServers: this.iceServers });
    this._scheduleRefresh();
  }

  /**
   * A refresh failed (the app's function threw, or the server refused the token):
   * reported as `error`, tried again halfway to the expiry while there is time. At
   * the expiry the server closes 4001 and the client resumes with a fresh token.
   *
   * @param {CallbridgeError} error
   */
  _reauthFailed(error) {
    this._emit('error', error);
    if (this.expiresAt === null) return;
    const remainingMs = this.expiresAt * 1000 - Date.now();
    if (remainingMs > 2000) this._setTimer('refresh', remainingMs / 2, () => this._reauth());
  }

  // ---- keepalive -----------------------------------------------------------

  _schedulePing() {
    const every = this.options.pingIntervalMs;
    if (!every) return;
    this._setTimer('ping', every, () => {
      const ws = this._ws;
      if (!ws || this._mode !== 'open') return;
      ws.send(JSON.stringify({ type: 'ping' }));
      if (this._timers.pong === null) {
        this._setTimer('pong', this.options.pongTimeoutMs, () => {
          ws.close(4000, 'no pong');
          this._onSocketGone(ws, 1006, `no pong within ${this.options.pongTimeoutMs} ms`);
        });
      }
      this._schedulePing();
    });
  }

  // ---- helpers -------------------------------------------------------------

  /**
   * @param {boolean} resumed
   * @returns {SessionInfo}
   */
  _info(resumed) {
    return {
      sessionId: /** @type {string} */ (this.sessionId),
      user: /** @type {string} */ (this.user),
      iceServers: this.iceServers,
      resumed,
      expiresAt: this.expiresAt,
    };
  }

  /** @param {CallbridgeClient['state']} state */
  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit('state', { state });
  }

  /** @returns {string} A call id unique in this client. */
  _newCallId() {
    this._callCount += 1;
    const salt = Math.floor(this.options.random() * 36 ** 6).toString(36);
    return `c${this._callCount}-${salt}`;
  }

  /**
   * @param {string} name
   * @param {number} ms
   * @param {() => void} fn
   */
  _setTimer(name, ms, fn) {
    this._clearTimer(name);
    this._timers[name] = setTimeout(() => {
      this._timers[name] = null;
      fn();
    }, ms);
  }

  /** @param {string} name */
  _clearTimer(name) {
    const t = this._timers[name];
    if (t !== null && t !== undefined) clearTimeout(t);
    this._timers[name] = null;
  }
}

/**
 * One call, outbound (from {@link CallbridgeClient#call}) or inbound (from the
 * client's `incoming` event).
 *
 * Events (`detail` in brackets): the server's messages for this call as they are:
 * `answer`, `ringing`, `progress`, `answered`, `stats`, `ended` ({type, call_id,
 * reason, sip_status?, local?}: `local` marks an end decided by the client, e.g.
 * `signaling_lost`); and `state` ({state}), `error` ({@link CallbridgeError}),
 * `mute` ({muted}), `hold` ({held}), `remotestream` ({stream}), `mediastate`
 * ({state}: the peer connection's `connectionState`).
 *
 * `state` is one of `new`, `calling`, `ringing`, `progress` (outbound), `incoming`,
 * `accepting` (inbound), `answered`, `ended`.
 */
export class Call extends Emitter {
  /**
   * Created by the client; not meant to be constructed directly.
   *
   * @param {CallbridgeClient} client
   * @param {{ id: string, direction: 'outbound' | 'inbound', to?: string, from?: string, offer?: string }} init
   */
  constructor(client, init) {
    super();
    /** The owning client. */
    this.client = client;
    /** The call id (client-chosen for outbound, gateway-chosen for inbound). */
    this.id = init.id;
    /** `outbound` or `inbound`. */
    this.direction = init.direction;
    /** The called number. */
    this.to = init.to ?? '';
    /** The caller's number (inbound calls). */
    this.from = init.from ?? '';
    /** @type {'new' | 'calling' | 'ringing' | 'progress' | 'incoming' | 'accepting' | 'answered' | 'ended'} */
    this.state = init.direction === 'inbound' ? 'incoming' : 'new';
    /** Local microphone muted. */
    this.muted = false;
    /** Put on hold with `hold()`. */
    this.held = false;
    /** @type {string | null} Why it ended. */
    this.endReason = null;
    /** @type {number | null} The SIP status that ended it, if any. */
    this.sipStatus = null;
    /** @type {Message | null} The latest `stats` from the server. */
    this.lastStats = null;
    /** @type {RTCPeerConnection | null} */
    this.peerConnection = null;
    /** @type {MediaStream | null} The microphone stream. */
    this.localStream = null;
    /** @type {MediaStream | null} The far end's audio. */
    this.remoteStream = null;

    /** The gateway's offer (inbound). */
    this._offer = init.offer ?? '';
    /** The `call` / `accept` message went out: candidates may follow. */
    this._signalled = false;
    /** @type {(RTCIceCandidateInit | null)[]} Local candidates waiting for `_signalled`. */
    this._localCandidates = [];
    /** A remote description is applied or queued: remote candidates may follow it. */
    this._remoteQueued = false;
    /** @type {(RTCIceCandidateInit | null)[]} Remote candidates waiting for the remote description. */
    this._remoteCandidates = [];
    /** Peer connection operations run one after the other. */
    this._ops = Promise.resolve();
    /** @type {ReturnType<typeof setTimeout> | null} Local end after hangup/reject. */
    this._endTimer = null;
    /** @type {string | null} The reason used if the server does not confirm the end. */
    this._pendingReason = null;
  }

  /**
   * Answers an incoming call: microphone, SDP answer, `accept`.
   *
   * @returns {Promise<void>} Resolves once `accept` is sent; rejects (and the call
   *   is rejected and ends) when the microphone or the answer fails.
   */
  async accept() {
    if (this.direction !== 'inbound' || this.state !== 'incoming' || this._endTimer !== null) {
      throw new CallbridgeError('bad_request', `accept() needs an incoming call; this one is ${this.state}`);
    }
    this._setState('accepting');
    try {
      const stream = await this._microphone();
      if (this._over()) return;
      const pc = this._createPeerConnection();
      this._remoteQueued = true;
      await this._op(() => pc.setRemoteDescription({ type: 'offer', sdp: this._offer }));
      this._flushRemoteCandidates();
      const answer = await this._op(async () => {
        for (const track of stream.getAudioTracks()) pc.addTrack(track, stream);
        const description = await pc.createAnswer();
        await pc.setLocalDescription(description);
        return description;
      });
      if (this._over()) return;
      this.client._send({ type: 'accept', call_id: this.id, sdp: pc.localDescription?.sdp ?? answer.sdp });
      this._markSignalled();
    } catch (e) {
      if (this._over()) return;
      const error = new CallbridgeError('media', `could not answer: ${e}`, { callId: this.id, cause: e });
      this._emit('error', error);
      this.client._send({ type: 'reject', call_id: this.id });
      this._endLocally('error');
      throw error;
    }
  }

  /**
   * Declines an incoming call (`reject`). The call ends with `rejected`.
   */
  reject() {
    if (this._over()) return;
    if (this.direction !== 'inbound' || this._signalled) {
      throw new CallbridgeError('bad_request', 'reject() is for incoming calls not yet accepted; use hangup()');
    }
    this._requestEnd('reject', 'rejected');
  }

  /**
   * Ends the call: `hangup` (CANCEL before answer, BYE after); an incoming call not
   * yet accepted is rejected. The microphone is released at once; `ended` follows
   * when the server confirms (or after `hangupTimeoutMs`).
   */
  hangup() {
    if (this._over()) return;
    if (this.direction === 'inbound' && !this._signalled) {
      this._requestEnd('reject', 'rejected');
    } else if (!this._signalled) {
      this._endLocally('hangup'); // `call` not sent yet: nothing to tell the server
    } else {
      this._requestEnd('hangup', 'hangup');
    }
  }

  /**
   * Sends DTMF digits (RFC 4733 toward the far end).
   *
   * @param {string} digits `0-9`, `*`, `#`, `A-D`.
   */
  dtmf(digits) {
    const d = String(digits).toUpperCase();
    if (!DTMF_DIGITS.test(d)) {
      throw new CallbridgeError('bad_request', `dtmf(${JSON.stringify(digits)}): use digits 0-9 * # A-D`);
    }
    this._requireLive('dtmf');
    this.client._send({ type: 'dtmf', call_id: this.id, digits: d });
  }

  /** Puts the call on hold (re-INVITE `sendonly` toward the far end); mutes the microphone meanwhile. */
  hold() {
    this._requireLive('hold');
    if (this.held) return;
    this.client._send({ type: 'hold', call_id: this.id });
    this.held = true;
    this._applyTrackState();
    this._emit('hold', { held: true });
  }

  /** Takes the call off hold (`unhold`). */
  unhold() {
    this._requireLive('unhold');
    if (!this.held) return;
    this.client._send({ type: 'unhold', call_id: this.id });
    this.held = false;
    this._applyTrackState();
    this._emit('hold', { held: false });
  }

  /**
   * Mutes or unmutes the microphone locally (no message to the server).
   *
   * @param {boolean} [muted=true]
   */
  mute(muted = true) {
    this.muted = Boolean(muted);
    this._applyTrackState();
    this._emit('mute', { muted: this.muted });
  }

  /**
   * The peer connection's statistics (see {@link audioQuality} for a summary).
   *
   * @returns {Promise<RTCStatsReport | null>} `null` before media is set up or after the end.
   */
  async getStats() {
    const pc = this.peerConnection;
    return pc && this.state !== 'ended' ? pc.getStats() : null;
  }

  // ---- internals -----------------------------------------------------------

  /**
   * Microphone, peer connection, offer, then `call`.
   *
   * @param {boolean} privacy
   */
  async _startOutbound(privacy) {
    try {
      const stream = await this._microphone();
      if (this._over()) return;
      const pc = this._createPeerConnection();
      for (const track of stream.getAudioTracks()) pc.addTrack(track, stream);
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      if (this._over()) return;
      /** @type {Message} */
      const message = { type: 'call', call_id: this.id, to: this.to, sdp: pc.localDescription?.sdp ?? offer.sdp };
      if (privacy) message.privacy = true;
      if (!this.client._send(message)) throw new Error(`not connected (${this.client.state})`);
      this._setState('calling');
      this._markSignalled();
    } catch (e) {
      if (this._over()) return;
      this._emit('error', new CallbridgeError('media', `could not start the call: ${e}`, { callId: this.id, cause: e }));
      this._endLocally('error');
    }
  }

  /** @returns {Promise<MediaStream>} */
  async _microphone() {
    const gum =
      this.client.options.getUserMedia ??
      ((/** @type {MediaStreamConstraints} */ c) => globalThis.navigator.mediaDevices.getUserMedia(c));
    const stream = await gum({ audio: this.client.options.audio, video: false });
    if (this._over()) {
      for (const t of stream.getTracks()) t.stop();
    } else {
      this.localStream = stream;
    }
    return stream;
  }

  /** @returns {RTCPeerConnection} */
  _createPeerConnection() {
    const Pc = this.client.options.RTCPeerConnection ?? globalThis.RTCPeerConnection;
    const pc = new Pc({ iceServers: this.client.iceServers });
    this.peerConnection = pc;
    pc.addEventListener('icecandidate', (event) => {
      const c = /** @type {RTCPeerConnectionIceEvent} */ (event).candidate;
      if (c && !c.candidate) return; // an empty candidate marks end of a generation
      this._sendCandidate(c ? toCandidateInit(c) : null);
    });
    pc.addEventListener('track', (event) => {
      const e = /** @type {RTCTrackEvent} */ (event);
      this.remoteStream =
        e.streams?.[0] ?? (typeof MediaStream === 'function' ? new MediaStream([e.track]) : null);
      this._emit('remotestream', { stream: this.remoteStream });
    });
    pc.addEventListener('connectionstatechange', () => {
      this._emit('mediastate', { state: pc.connectionState });
    });
    return pc;
  }

  /**
   * Trickles a local candidate, or keeps it until `call`/`accept` is sent.
   *
   * @param {RTCIceCandidateInit | null} candidate
   */
  _sendCandidate(candidate) {
    if (this._over()) return;
    if (!this._signalled) {
      this._localCandidates.push(candidate);
      return;
    }
    this.client._send({ type: 'ice', call_id: this.id, candidate });
  }

  _markSignalled() {
    this._signalled = true;
    const pending = this._localCandidates;
    this._localCandidates = [];
    for (const c of pending) this._sendCandidate(c);
  }

  _flushRemoteCandidates() {
    const pending = this._remoteCandidates;
    this._remoteCandidates = [];
    for (const c of pending) this._addRemoteCandidate(c);
  }

  /** @param {RTCIceCandidateInit | null} candidate */
  _addRemoteCandidate(candidate) {
    if (!this._remoteQueued) {
      this._remoteCandidates.push(candidate);
      return;
    }
    const pc = /** @type {RTCPeerConnection} */ (this.peerConnection);
    // `addIceCandidate()` without a candidate signals the end of candidates.
    this._op(() => (candidate ? pc.addIceCandidate(candidate) : pc.addIceCandidate())).catch((e) => {
      if (candidate) this._emit('error', new CallbridgeError('media', `bad remote candidate: ${e}`, { callId: this.id, cause: e }));
    });
  }

  /**
   * Runs a peer connection operation after the previous ones.
   *
   * @template T
   * @param {() => Promise<T>} fn
   * @returns {Promise<T>}
   */
  _op(fn) {
    const result = this._ops.then(fn);
    this._ops = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  /**
   * A server message for this call.
   *
   * @param {Message} message
   */
  _handle(message) {
    if (this._over()) return;
    // After hangup()/reject() only the confirmation matters.
    if (this._endTimer !== null && message.type !== 'ended') return;
    switch (message.type) {
      case 'answer': {
        const pc = this.peerConnection;
        if (this.direction !== 'outbound' || !pc) return;
        this._remoteQueued = true;
        this._op(() => pc.setRemoteDescription({ type: 'answer', sdp: message.sdp })).catch((e) => {
          this._emit('error', new CallbridgeError('media', `the gateway's answer was refused: ${e}`, { callId: this.id, cause: e }));
        });
        this._flushRemoteCandidates();
        this._emit('answer', message);
        return;
      }
      case 'ice':
        this._addRemoteCandidate(message.candidate ?? null);
        return;
      case 'ringing':
      case 'progress':
      case 'answered':
        if (this.state === 'answered' && message.type !== 'answered') return;
        this._setState(message.type);
        this._emit(message.type, message);
        return;
      case 'stats':
        this.lastStats = message;
        this._emit('stats', message);
        return;
      case 'ended':
        this._end(message);
        return;
      default:
        // A newer server's message type: ignored, as the protocol asks.
    }
  }

  /** @param {CallbridgeError} error */
  _onError(error) {
    this._emit('error', error);
    // The server no longer knows this call: it is over.
    if (error.code === 'not_found' && this._endTimer !== null) this._endLocally(this._pendingReason ?? 'hangup');
  }

  /**
   * Asks the server to end the call, releases media now, and ends locally if the
   * server does not confirm in time.
   *
   * @param {'hangup' | 'reject'} type
   * @param {string} reason The local reason used if the server stays silent.
   */
  _requestEnd(type, reason) {
    if (this._endTimer !== null) return;
    this.client._send({ type, call_id: this.id });
    this._releaseMedia();
    this._pendingReason = reason;
    this._endTimer = setTimeout(() => this._endLocally(reason), this.client.options.hangupTimeoutMs);
  }

  /** The client is closing: tell the server if possible, end now. */
  _closeWithClient() {
    if (this._over()) return;
    if (this._signalled || this.direction === 'inbound') {
      this.client._send({ type: this.direction === 'inbound' && !this._signalled ? 'reject' : 'hangup', call_id: this.id });
    }
    this._endLocally(this.direction === 'inbound' && !this._signalled ? 'rejected' : 'hangup');
  }

  /** @param {string} reason */
  _endLocally(reason) {
    this._end({ type: 'ended', call_id: this.id, reason, local: true });
  }

  /**
   * The one way a call ends.
   *
   * @param {Message} message
   */
  _end(message) {
    if (this._over()) return;
    if (this._endTimer !== null) clearTimeout(this._endTimer);
    this._endTimer = null;
    this.endReason = message.reason ?? 'error';
    this.sipStatus = typeof message.sip_status === 'number' ? message.sip_status : null;
    this._releaseMedia();
    this.client.calls.delete(this.id);
    this._setState('ended');
    this._emit('ended', message);
    this.client._moveIfIdle();
  }

  _releaseMedia() {
    for (const t of this.localStream?.getTracks() ?? []) t.stop();
    const pc = this.peerConnection;
    if (pc && pc.signalingState !== 'closed') pc.close();
  }

  _applyTrackState() {
    for (const t of this.localStream?.getAudioTracks() ?? []) t.enabled = !this.muted && !this.held;
  }

  /** @param {string} what */
  _requireLive(what) {
    if (this._over() || !this._signalled) {
      throw new CallbridgeError('bad_request', `${what}() needs a call in progress; this one is ${this.state}`);
    }
  }

  /** @returns {boolean} Whether the call has ended (a method, so checks after an `await` read the current state). */
  _over() {
    return this.state === 'ended';
  }

  /** @param {Call['state']} state */
  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit('state', { state });
  }
}

/**
 * A summary of a peer connection's audio statistics, with an E-model estimate of
 * the MOS (ITU-T G.107, simplified: G.711, no codec impairment).
 *
 * @typedef {object} AudioQuality
 * @property {number} packetsReceived Inbound RTP packets.
 * @property {number} packetsLost Inbound packets lost.
 * @property {number} lossPct Loss over the call, percent.
 * @property {number} jitterMs Inbound jitter.
 * @property {number | null} rttMs Round trip time, if known.
 * @property {number} audioLevel Inbound audio level (0 to 1).
 * @property {number} mos Estimated MOS (1 to 4.5).
 */

/**
 * Summarises `getStats()` for a quality panel. The server's `stats` events carry
 * the gateway's own view; this one is the browser's.
 *
 * @param {RTCStatsReport | Iterable<[string, any]> | null} report
 * @returns {AudioQuality | null} `null` when the report has no inbound audio yet.
 */
export function audioQuality(report) {
  if (!report) return null;
  /** @type {any} */
  let inbound = null;
  /** @type {number | null} */
  let rtt = null;
  for (const [, s] of /** @type {Iterable<[string, any]>} */ (report)) {
    if (s.type === 'inbound-rtp' && (s.kind ?? s.mediaType) === 'audio') inbound = s;
    if (s.type === 'remote-inbound-rtp' && typeof s.roundTripTime === 'number') rtt = s.roundTripTime;
    if (s.type === 'candidate-pair' && s.nominated && typeof s.currentRoundTripTime === 'number' && rtt === null) {
      rtt = s.currentRoundTripTime;
    }
  }
  if (!inbound) return null;
  const received = inbound.packetsReceived ?? 0;
  const lost = Math.max(0, inbound.packetsLost ?? 0);
  const lossPct = received + lost > 0 ? (100 * lost) / (received + lost) : 0;
  const jitterMs = (inbound.jitter ?? 0) * 1000;
  const rttMs = rtt === null ? null : rtt * 1000;
  return {
    packetsReceived: received,
    packetsLost: lost,
    lossPct,
    jitterMs,
    rttMs,
    audioLevel: inbound.audioLevel ?? 0,
    mos: estimateMos(lossPct, jitterMs, rttMs ?? 0),
  };
}

/**
 * MOS from loss, jitter and round trip time (simplified E-model).
 *
 * @param {number} lossPct
 * @param {number} jitterMs
 * @param {number} rttMs
 * @returns {number} 1 to 4.5, two decimals.
 */
export function estimateMos(lossPct, jitterMs, rttMs) {
  const latency = rttMs / 2 + 2 * jitterMs + 10;
  const delayImpairment = latency < 160 ? latency / 40 : (latency - 120) / 10;
  const r = Math.max(0, Math.min(100, 93.2 - delayImpairment - 2.5 * lossPct));
  const mos = 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r);
  return Math.round(Math.max(1, Math.min(4.5, mos)) * 100) / 100;
}

/**
 * The `ice_servers` of `ready` as `RTCIceServer`s.
 *
 * @param {unknown} list
 * @returns {RTCIceServer[]}
 */
function toIceServers(list) {
  if (!Array.isArray(list)) return [];
  return list
    .filter((s) => s && (typeof s.urls === 'string' || Array.isArray(s.urls)))
    .map((s) => {
      /** @type {RTCIceServer} */
      const server = { urls: s.urls };
      if (s.username !== undefined) server.username = s.username;
      if (s.credential !== undefined) server.credential = s.credential;
      return server;
    });
}

/**
 * A candidate in the protocol's shape: `candidate`, `sdpMid`, `sdpMLineIndex`.
 *
 * @param {RTCIceCandidate | RTCIceCandidateInit} c
 * @returns {RTCIceCandidateInit}
 */
function toCandidateInit(c) {
  return { candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null };
}
