// auth.mjs — a server started with --api-key: the openai client with the right key works, with a wrong
// key it gets the 401 as an AuthenticationError. Env: SALA_URL, SALA_MODEL, SALA_KEY.
import OpenAI from 'openai';
import { test, done, assert, eq, BASE } from './lib.mjs';

const MODEL = process.env.SALA_MODEL;
const good = new OpenAI({ baseURL: `${BASE}/v1`, apiKey: process.env.SALA_KEY, maxRetries: 0 });
const wrong = new OpenAI({ baseURL: `${BASE}/v1`, apiKey: 'not-the-key', maxRetries: 0 });

await test('openai client with the API key', async () => {
  const r = await good.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 3 });
  assert(r.choices[0].message.content !== undefined);
  const s = await good.completions.create({ model: MODEL, prompt: 'Hi', max_tokens: 3, stream: true });
  let n = 0;
  for await (const ch of s) n += ch.choices.length;
  assert(n > 0, 'stream chunks');
});

await test('openai client with a wrong key gets AuthenticationError (401)', async () => {
  try {
    await wrong.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 3 });
    throw new Error('no error');
  } catch (e) {
    eq(e.status, 401, 'status');
    assert(e instanceof OpenAI.AuthenticationError, `error class ${e.constructor.name}`);
    eq(e.code, 'invalid_api_key', 'code');
  }
});

done();
