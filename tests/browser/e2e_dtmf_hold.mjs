// Chromium end to end, driven by tests/browser_demo.rs: during an answered call,
// press the DTMF key 1, hold, resume, hang up. The test's SIPp scenario checks the
// hold/unhold re-INVITEs and the BYE; its RTP sink checks the RFC 4733 event.
// The page must get no `error` from the gateway for any of these.

import { mark, run, sleep } from './lib/harness.mjs';

await run('dtmf_hold', async (s) => {
  await s.signInWithDevToken();
  await s.page.locator('#number').fill(s.args.to);
  await s.page.locator('#call').click();
  await s.page.evaluate(() => {
    window.callErrors = [];
    window.demo.call.on('error', (e) => window.callErrors.push(`${e.code}: ${e.message}`));
  });
  await s.callState('answered');
  await s.until('media to connect', () => window.demo.call?.peerConnection?.connectionState === 'connected');
  mark('answered');

  const noErrors = async (after) => {
    await sleep(1500); // time for an error reply to come back
    const errors = await s.page.evaluate(() => window.callErrors);
    if (errors.length) throw new Error(`the gateway refused ${after}: ${errors.join('; ')}`);
  };

  await s.page.locator('#keypad button[data-key="1"]').click();
  await s.until('the DTMF line', () => document.querySelector('#dtmf-sent')?.textContent?.includes('1'));
  await noErrors('dtmf');
  mark('dtmf');

  await s.page.locator('#hold').click();
  await s.until('the hold state', () => window.demo.call.held && /on hold/.test(document.querySelector('#status').textContent));
  await s.screenshot('held');
  await noErrors('hold');
  await s.page.locator('#hold').click();
  await s.until('the call off hold', () => !window.demo.call.held);
  await noErrors('unhold');
  mark('unhold');

  await s.page.locator('#hangup').click();
  await s.callState('ended');
  mark('done');
});
