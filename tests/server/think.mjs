// think.mjs — reasoning: a chat template whose generation prompt opens "<think>\n" makes the model's output
// start as reasoning, so (with a random model that rarely closes the block) the answer must come back as
// `reasoning_content`, identically with and without streaming, and equal to `sala run`'s raw output.
// Env: SALA_URL, SALA_MODEL, SALA, SALA_MODEL_DIR, SALA_TOKENIZER_DIR.
import { execFileSync } from 'node:child_process';
import OpenAI from 'openai';
import { test, done, assert, eq, BASE } from './lib.mjs';

const MODEL = process.env.SALA_MODEL;
const client = new OpenAI({ baseURL: `${BASE}/v1`, apiKey: 'unused', maxRetries: 0 });
const params = { model: MODEL, messages: [{ role: 'user', content: 'Think about the sea.' }], max_tokens: 16, temperature: 0 };
const squash = (s) => (s || '').replace(/\s+/g, '');

let plain = null;
await test('reasoning_content (non-streaming)', async () => {
  const r = await client.chat.completions.create(params);
  const m = r.choices[0].message;
  assert(typeof m.reasoning_content === 'string' && m.reasoning_content.length > 0, `message ${JSON.stringify(m)}`);
  plain = m;
});

await test('reasoning_content (streaming) equals non-streaming', async () => {
  const s = await client.chat.completions.create({ ...params, stream: true });
  let reasoning = '', content = '';
  for await (const ch of s)
    for (const c of ch.choices) {
      reasoning += c.delta.reasoning_content || '';
      content += c.delta.content || '';
    }
  eq(reasoning, plain.reasoning_content, 'reasoning');
  eq(content, plain.content || '', 'content');
});

await test('reasoning + content equal `sala run` output', async () => {
  const out = execFileSync(process.env.SALA, ['run', '-m', process.env.SALA_MODEL_DIR, '--tokenizer', process.env.SALA_TOKENIZER_DIR,
    '-p', 'Think about the sea.', '--chat', '--temp', '0', '-n', '16', '-t', '1'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  // `sala run` prints the raw text; the splitter drops the tags and the whitespace around them
  eq(squash(plain.reasoning_content) + squash(plain.content), squash(out.replace('</think>', '')));
});

done();
