// Chromium end to end, driven by tests/browser_demo.rs: sign in, print @@ready; the
// test then has SIPp call the dev token's DID. The incoming-call banner shows,
// Accept leads to "answered", and SIPp's BYE ends the call as remote_hangup.

import { mark, run } from './lib/harness.mjs';

await run('inbound', async (s) => {
  await s.signInWithDevToken();
  mark('ready');

  await s.page.locator('#incoming').waitFor({ state: 'visible', timeout: 30_000 });
  const banner = await s.page.locator('#incoming-text').innerText();
  if (!/incoming call from/i.test(banner)) throw new Error(`banner says "${banner}"`);
  await s.screenshot('banner');
  await s.page.locator('#accept').click();

  await s.callState('answered');
  await s.until('media to connect', () => window.demo.call?.peerConnection?.connectionState === 'connected');
  await s.screenshot('answered');
  mark('answered');

  // SIPp hangs up a few seconds after the answer.
  await s.callState('ended', 30_000);
  const status = await s.statusText();
  if (!/remote hangup/i.test(status)) throw new Error(`expected the far end's hang-up, status says "${status}"`);
  mark('done');
});
