// Chromium end to end, driven by tests/browser_demo.rs through a TCP proxy: dial,
// hear the echo, print @@answered; the test then cuts every proxied connection.
// The client reconnects, sends `resume`, gets `ready` again, and the call goes on
// (still answered, audio still arriving); then hang up normally.

import { mark, run } from './lib/harness.mjs';

await run('resume', async (s) => {
  await s.signInWithDevToken();
  await s.page.evaluate(() => {
    window.clientStates = [];
    window.readies = [];
    window.demo.client.on('state', ({ state }) => window.clientStates.push(state));
    window.demo.client.on('ready', (info) => window.readies.push(info));
  });
  await s.page.locator('#number').fill(s.args.to);
  await s.page.locator('#call').click();
  await s.callState('answered');
  const before = await s.waitForEchoedAudio(50);
  mark('answered');

  await s.until('the client to notice the drop', () => window.clientStates.includes('reconnecting'), { timeoutMs: 30_000 });
  await s.screenshot('reconnecting');
  const resumed = await s.until('a resumed ready', () => window.readies.find((r) => r.resumed) ?? null, { timeoutMs: 30_000 });
  console.log(`resumed: ${JSON.stringify(resumed)}`);
  const state = await s.page.evaluate(() => window.demo.call?.state);
  if (state !== 'answered') throw new Error(`after resume the call is ${state}`);
  await s.until(
    'audio to keep flowing after the resume',
    async (n) => {
      const report = await window.demo.call.getStats();
      let received = 0;
      report.forEach((x) => {
        if (x.type === 'inbound-rtp' && x.kind === 'audio') received = x.packetsReceived;
      });
      return received > n + 50;
    },
    { arg: before.packetsReceived, timeoutMs: 15_000 },
  );
  await s.screenshot('resumed');

  await s.page.locator('#hangup').click();
  await s.callState('ended');
  const status = await s.statusText();
  if (!/ended: hangup/i.test(status)) throw new Error(`status says "${status}"`);
  mark('done');
});
