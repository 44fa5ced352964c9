// keepalive.mjs — a stream whose prefill is long gets ": keep-alive" SSE comments before its first token
// (server started with a tiny --keep-alive); raw clients see them, the openai client ignores them.
// Env: SALA_URL, SALA_MODEL.
import OpenAI from 'openai';
import { test, done, assert, eq, post, sseData, BASE } from './lib.mjs';

const MODEL = process.env.SALA_MODEL;
const client = new OpenAI({ baseURL: `${BASE}/v1`, apiKey: 'unused', maxRetries: 0 });
const prompt = 'hello world '.repeat(1000);
let rawText = null;

await test('long prefill: keep-alive comments, then the answer', async () => {
  const r = await post('/v1/completions', { model: MODEL, prompt, max_tokens: 4, temperature: 0, stream: true });
  eq(r.status, 200);
  assert(/\n: keep-alive\n\n/.test(r.text), `no keep-alive comment in ${r.text.slice(0, 300)}`);
  const d = sseData(r.text);
  eq(d[d.length - 1], '[DONE]');
  rawText = d.slice(0, -1).map((x) => JSON.parse(x).choices.map((c) => c.text).join('')).join('');
});

await test('the openai client reads through keep-alive comments', async () => {
  const s = await client.completions.create({ model: MODEL, prompt, max_tokens: 4, temperature: 0, stream: true });
  let text = '', finish = null;
  for await (const ch of s)
    for (const c of ch.choices) {
      text += c.text;
      if (c.finish_reason) finish = c.finish_reason;
    }
  eq(text, rawText, 'text');
  assert(finish, 'finish_reason');
});

done();
