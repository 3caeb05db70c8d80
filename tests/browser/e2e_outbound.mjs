// Chromium end to end, driven by tests/browser_demo.rs against a gateway and SIPp
// (-rtp_echo): sign in with the dev token, dial, see "answered", check that echoed
// audio arrives (getStats: inbound packets and a non-zero audio level), hang up.

import { mark, run } from './lib/harness.mjs';

await run('outbound', async (s) => {
  await s.until('the page at /demo/', () => location.pathname === '/demo/');
  await s.signInWithDevToken();
  await s.page.locator('#number').fill(s.args.to);
  await s.page.locator('#call').click();
  await s.callState('answered');
  const status = await s.statusText();
  if (!/answered/i.test(status)) throw new Error(`status line says "${status}"`);
  mark('answered');

  const audio = await s.waitForEchoedAudio(50);
  console.log(`inbound audio: ${JSON.stringify(audio)}`);
  const mic = await s.until('the microphone meter to move', () => window.demo.micLevel > 0);
  console.log(`microphone level: ${mic}`);
  // Let the quality panel update once from the browser's statistics.
  await s.until('the quality panel', () => document.querySelector('#q-mos')?.textContent !== '–', { timeoutMs: 5000 });
  await s.screenshot('answered');

  await s.page.locator('#hangup').click();
  await s.callState('ended');
  const ended = await s.statusText();
  if (!/ended: hangup/i.test(ended)) throw new Error(`expected a hangup, status line says "${ended}"`);
  await s.screenshot('ended');
  mark('done');
});
