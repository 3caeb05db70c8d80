// The embeddable client itself (web-demo/callbridge.js) in Node, driven by
// tests/fleet_haproxy.rs: a session through the load balancer that is told to move
// (`goaway`) must come back as a new session on another instance. Node 20 needs
// `--experimental-websocket`; the balancer's test CA comes from NODE_EXTRA_CA_CERTS.
// Prints @@ready <session>, @@goaway, @@moved <session>; exits 1 after 60 s.
//   node --experimental-websocket goaway_move.mjs wss://127.0.0.1:PORT/ws <jwt>

import { CallbridgeClient } from '../../web-demo/callbridge.js';

const [url, token] = process.argv.slice(2);
const deadline = setTimeout(() => {
  console.log('@@timeout');
  process.exit(1);
}, 60_000);

const client = new CallbridgeClient({ url, token });
let first = null;
client.on('goaway', () => console.log('@@goaway'));
client.on('ready', (info) => {
  if (first === null) {
    first = info.sessionId;
    console.log(`@@ready ${info.sessionId}`);
    return;
  }
  if (info.sessionId !== first && !info.resumed) {
    console.log(`@@moved ${info.sessionId}`);
    clearTimeout(deadline);
    // Stay connected until the test has counted the session, then leave.
    process.stdin.resume();
    process.stdin.on('end', () => {
      client.close();
      process.exit(0);
    });
  }
});
client.on('closed', (detail) => {
  console.log(`@@closed ${JSON.stringify(detail)}`);
  process.exit(1);
});
await client.connect();
