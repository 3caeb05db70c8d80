// Chromium end to end, driven by tests/browser_demo.rs: the ~20-line page of
// docs/embedding.md (web-demo/embed.html) connects, calls, is answered, hangs up.

import { mark, run } from './lib/harness.mjs';

await run('embed', async (s) => {
  const status = () => document.querySelector('#status')?.textContent ?? '';
  await s.until('ready', () => /^ready as /.test(document.querySelector('#status').textContent));
  await s.page.locator('#to').fill(s.args.to);
  await s.page.locator('#dial').click();
  await s.until('answered', () => document.querySelector('#status').textContent === 'answered');
  mark('answered');
  await s.screenshot('answered');
  await s.page.locator('#hangup').click();
  await s.until('ended: hangup', () => document.querySelector('#status').textContent === 'ended: hangup');
  console.log(`final status: ${await s.page.evaluate(status)}`);
  mark('done');
});
