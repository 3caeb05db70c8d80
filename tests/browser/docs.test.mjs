// docs/embedding.md quotes web-demo/embed.html in full; the Chromium test
// `the_embedding_snippet_places_and_hangs_up_a_call` runs that page. This keeps the
// two identical, so the documented snippet is the one that is tested.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';

const root = new URL('../../', import.meta.url);

test('docs/embedding.md quotes web-demo/embed.html verbatim', async () => {
  const page = await readFile(new URL('web-demo/embed.html', root), 'utf8');
  const doc = await readFile(new URL('docs/embedding.md', root), 'utf8');
  const block = doc.match(/```html\n([\s\S]*?)```/);
  assert.ok(block, 'docs/embedding.md has an html code block');
  assert.equal(block[1], page);
  assert.ok(page.trim().split('\n').length <= 26, 'the snippet stays about 20 lines');
});
