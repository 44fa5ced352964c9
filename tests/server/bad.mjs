// bad.mjs — bad input to `sala serve` over raw HTTP: every case must get the right 4xx status and an
// OpenAI-style error object, and the server must stay healthy afterwards.
// Env: SALA_URL, SALA_MODEL (served id), SALA_CTX (context of a slot), SALA_MAX_BODY (bytes).
import net from 'node:net';
import { test, done, assert, eq, request, post, expectError, health, BASE } from './lib.mjs';

const MODEL = process.env.SALA_MODEL;
const CTX = Number(process.env.SALA_CTX || 256);
const MAX_BODY = Number(process.env.SALA_MAX_BODY || 16 << 20);
const CHAT = '/v1/chat/completions', COMPL = '/v1/completions';
const msgs = [{ role: 'user', content: 'Hello' }];
const chat = (extra) => post(CHAT, { model: MODEL, messages: msgs, max_tokens: 4, ...extra });

// JSON syntax and encoding
await test('malformed JSON -> 400', async () => expectError(await post(CHAT, '{"model": "x", "messages": [}'), 400, { code: 'invalid_json' }));
await test('truncated JSON -> 400', async () => expectError(await post(CHAT, '{"messages": [{"role": "user", "content": "hi"'), 400));
await test('trailing garbage -> 400', async () => expectError(await post(CHAT, JSON.stringify({ messages: msgs }) + ' xyz'), 400));
await test('empty body -> 400', async () => expectError(await post(CHAT, ''), 400));
await test('body is an array -> 400', async () => expectError(await post(CHAT, '[1,2,3]'), 400));
await test('NaN literal -> 400', async () => expectError(await post(CHAT, `{"messages":${JSON.stringify(msgs)},"temperature":NaN}`), 400));
await test('invalid UTF-8 -> 400', async () => {
  const head = Buffer.from('{"messages":[{"role":"user","content":"');
  const body = Buffer.concat([head, Buffer.from([0xc3, 0x28, 0xff, 0xfe]), Buffer.from('"}]}')]);
  expectError(await post(CHAT, body), 400, { code: 'invalid_encoding' });
});
await test('overlong UTF-8 / encoded surrogate -> 400', async () => {
  for (const bytes of [[0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80]]) {
    const body = Buffer.concat([Buffer.from('{"prompt":"'), Buffer.from(bytes), Buffer.from('"}')]);
    expectError(await post(COMPL, body), 400);
  }
});
await test('lone surrogate escape -> 400', async () => expectError(await post(CHAT, '{"messages":[{"role":"user","content":"\\ud800"}]}'), 400));
await test('NUL escape in a string -> 400', async () => expectError(await post(CHAT, '{"messages":[{"role":"user","content":"a\\u0000b"}]}'), 400));
await test('deep nesting -> 400', async () => expectError(await post(CHAT, '['.repeat(100000) + ']'.repeat(100000)), 400));

// wrong types
await test('messages is a string -> 400', async () => expectError(await post(CHAT, { messages: 'hi' }), 400, { param: 'messages' }));
await test('missing messages -> 400', async () => expectError(await post(CHAT, { model: MODEL }), 400, { param: 'messages' }));
await test('empty messages -> 400', async () => expectError(await post(CHAT, { messages: [] }), 400, { param: 'messages' }));
await test('message not an object -> 400', async () => expectError(await post(CHAT, { messages: ['hi'] }), 400, { param: 'messages[0]' }));
await test('message without role -> 400', async () => expectError(await post(CHAT, { messages: [{ content: 'x' }] }), 400, { param: 'messages[0].role' }));
await test('unknown role -> 400', async () => expectError(await post(CHAT, { messages: [{ role: 'wizard', content: 'x' }] }), 400, { param: 'messages[0].role' }));
await test('content of wrong type -> 400', async () => expectError(await post(CHAT, { messages: [{ role: 'user', content: 42 }] }), 400, { param: 'messages[0].content' }));
await test('user content null -> 400', async () => expectError(await post(CHAT, { messages: [{ role: 'user', content: null }] }), 400, { param: 'messages[0].content' }));
await test('image content part -> 400', async () => expectError(await post(CHAT, { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] }), 400));
await test('max_tokens as string -> 400', async () => expectError(await chat({ max_tokens: '10' }), 400, { param: 'max_tokens', code: 'invalid_type' }));
await test('temperature as string -> 400', async () => expectError(await chat({ temperature: 'hot' }), 400, { param: 'temperature' }));
await test('stream as string -> 400', async () => expectError(await chat({ stream: 'yes' }), 400, { param: 'stream' }));
await test('stop as number -> 400', async () => expectError(await chat({ stop: 5 }), 400, { param: 'stop' }));
await test('stop array with a number -> 400', async () => expectError(await chat({ stop: ['a', 1] }), 400, { param: 'stop' }));
await test('too many stop strings -> 400', async () => expectError(await chat({ stop: Array.from({ length: 40 }, (_, i) => `s${i}`) }), 400, { param: 'stop' }));
await test('stream_options not an object -> 400', async () => expectError(await chat({ stream: true, stream_options: 1 }), 400, { param: 'stream_options' }));
await test('model not a string -> 400', async () => expectError(await chat({ model: 7 }), 400, { param: 'model' }));
await test('prompt of wrong type -> 400', async () => expectError(await post(COMPL, { prompt: { a: 1 } }), 400, { param: 'prompt' }));
await test('missing prompt -> 400', async () => expectError(await post(COMPL, { max_tokens: 3 }), 400, { param: 'prompt' }));
await test('batch of prompts -> 400', async () => expectError(await post(COMPL, { prompt: ['a', 'b'] }), 400, { param: 'prompt' }));
await test('negative token id -> 400', async () => expectError(await post(COMPL, { prompt: [1, -2, 3] }), 400));
await test('token id past the vocabulary -> 400', async () => expectError(await post(COMPL, { prompt: [1, 2, 2000000000], max_tokens: 2 }), 400, { param: 'prompt' }));

// absurd values
await test('negative max_tokens -> 400', async () => expectError(await chat({ max_tokens: -1 }), 400, { param: 'max_tokens' }));
await test('zero max_tokens -> 400', async () => expectError(await chat({ max_tokens: 0 }), 400, { param: 'max_tokens' }));
await test('fractional max_tokens -> 400', async () => expectError(await chat({ max_tokens: 1.5 }), 400, { param: 'max_tokens' }));
await test('huge max_tokens (1e300) -> 400', async () => expectError(await chat({ max_tokens: 1e300 }), 400, { param: 'max_tokens' }));
await test('negative max_completion_tokens -> 400', async () => expectError(await chat({ max_tokens: undefined, max_completion_tokens: -3 }), 400, { param: 'max_completion_tokens' }));
await test('temperature > 2 -> 400', async () => expectError(await chat({ temperature: 2.5 }), 400, { param: 'temperature' }));
await test('negative temperature -> 400', async () => expectError(await chat({ temperature: -0.1 }), 400, { param: 'temperature' }));
await test('temperature 1e999 (inf) -> 400', async () => expectError(await post(CHAT, `{"messages":${JSON.stringify(msgs)},"temperature":1e999}`), 400, { param: 'temperature' }));
await test('top_p 0 -> 400', async () => expectError(await chat({ top_p: 0 }), 400, { param: 'top_p' }));
await test('top_p 1.5 -> 400', async () => expectError(await chat({ top_p: 1.5 }), 400, { param: 'top_p' }));
await test('n = 2 -> 400', async () => expectError(await chat({ n: 2 }), 400, { param: 'n' }));
await test('n = 1e9 -> 400', async () => expectError(await chat({ n: 1e9 }), 400, { param: 'n' }));
await test('n = 0 -> 400', async () => expectError(await chat({ n: 0 }), 400, { param: 'n' }));
await test('presence_penalty 5 -> 400', async () => expectError(await chat({ presence_penalty: 5 }), 400, { param: 'presence_penalty' }));
await test('seed 0.5 -> 400', async () => expectError(await chat({ seed: 0.5 }), 400, { param: 'seed' }));
await test('logprobs -> 400 (not supported)', async () => expectError(await chat({ logprobs: true }), 400, { param: 'logprobs' }));
await test('n = 1 is accepted', async () => eq((await chat({ n: 1 })).status, 200));

// model, routes, methods
await test('unknown model -> 404', async () => expectError(await chat({ model: 'gpt-17-ultra' }), 404, { param: 'model', code: 'model_not_found' }));
await test('unknown model (completions) -> 404', async () => expectError(await post(COMPL, { model: 'nope', prompt: 'x' }), 404, { code: 'model_not_found' }));
await test('GET /v1/models/unknown -> 404', async () => expectError(await request('GET', '/v1/models/nope'), 404));
await test('unknown URL -> 404', async () => expectError(await request('GET', '/v1/embeddings'), 404));
await test('unknown URL with a body -> 404', async () => expectError(await post('/v1/whatever', { a: 1 }), 404));
await test('GET on a POST endpoint -> 405', async () => {
  const r = await request('GET', CHAT);
  expectError(r, 405);
  eq(r.headers['allow'], 'POST', 'Allow header');
});
await test('POST on /health -> 405', async () => expectError(await post('/health', { a: 1 }), 405));
await test('DELETE /v1/models -> 405', async () => expectError(await request('DELETE', '/v1/models'), 405));

// size limits
await test('body over the size limit -> 413', async () => {
  const pad = 'x'.repeat(MAX_BODY + 1024);
  expectError(await post(CHAT, { messages: [{ role: 'user', content: pad }] }), 413);
});
await test('announced huge body with Expect: 100-continue -> 413 at once', async () => {
  const r = await new Promise((resolve, reject) => {
    const s = net.connect(Number(new URL(BASE).port), new URL(BASE).hostname);
    let buf = '';
    s.on('data', (d) => { buf += d; });
    s.on('error', reject);
    s.on('close', () => resolve(buf));
    s.write(`POST ${CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${MAX_BODY * 100}\r\nExpect: 100-continue\r\n\r\n`);
    setTimeout(() => s.destroy(), 5000);
  });
  assert(/^HTTP\/1\.1 413/.test(r), `got ${r.slice(0, 80)}`);
  assert(!/100 Continue/.test(r), 'server asked for the body');
});
await test('many large uploads at once: the body budget answers 503, nothing breaks', async () => {
  // the server buffers at most max(64 MiB, 8 x --max-body) of request bodies at a time
  const budget = Math.max(64 << 20, 8 * MAX_BODY);
  const each = Math.min(MAX_BODY - 4096, 4 << 20);
  const count = Math.ceil(budget / each) + 4;
  const pad = 'y'.repeat(each - 200);
  const body = JSON.stringify({ model: 'no-such-model', messages: [{ role: 'user', content: pad }] });
  const port = Number(new URL(BASE).port), host = new URL(BASE).hostname;
  const socks = [];
  // send all but the last byte of every body, so they are all buffered at the same time
  for (let i = 0; i < count; i++) {
    const s = net.connect(port, host);
    s.buf = '';
    s.on('data', (d) => { s.buf += d; });
    s.on('error', () => {});
    s.done = new Promise((r) => s.on("close", r));
    s.write(`POST ${CHAT} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`);
    s.write(body.slice(0, -1));
    socks.push(s);
  }
  await new Promise((r) => setTimeout(r, 1500));
  for (const s of socks) s.end(body.slice(-1));
  await Promise.all(socks.map((s) => Promise.race([s.done, new Promise((r) => setTimeout(r, 20000))])));
  const codes = socks.map((s) => (s.buf.match(/^HTTP\/1\.1 (\d+)/) || [])[1] || 'none');
  const n503 = codes.filter((c) => c === '503').length, n404 = codes.filter((c) => c === '404').length;
  assert(n503 >= 1, `no 503 among ${count} uploads: ${codes.join(',')}`);
  eq(n503 + n404, count, `statuses ${codes.join(',')}`);
});
await test('prompt past the context -> 400 context_length_exceeded', async () => {
  const long = 'hello world '.repeat(CTX * 2);
  expectError(await chat({ messages: [{ role: 'user', content: long }] }), 400, { code: 'context_length_exceeded' });
  expectError(await post(COMPL, { prompt: long, max_tokens: 2 }), 400, { code: 'context_length_exceeded' });
  expectError(await post(COMPL, { prompt: Array.from({ length: CTX + 5 }, () => 7), max_tokens: 2 }), 400, { code: 'context_length_exceeded' });
});
await test('very long prompt (far past the context) -> 400 quickly', async () => {
  const t0 = Date.now();
  const long = 'abcdefgh'.repeat(Math.min(MAX_BODY / 16, 1 << 20));
  expectError(await post(COMPL, { prompt: long, max_tokens: 2 }), 400, { code: 'context_length_exceeded' });
  assert(Date.now() - t0 < 10000, `took ${Date.now() - t0} ms`);
});
await test('stream request past the context -> 400 (not a stream)', async () => {
  const long = 'hello world '.repeat(CTX * 2);
  const r = await post(COMPL, { prompt: long, max_tokens: 2, stream: true });
  expectError(r, 400, { code: 'context_length_exceeded' });
});

// garbage on the wire
await test('non-HTTP bytes are refused without harm', async () => {
  const r = await new Promise((resolve) => {
    const s = net.connect(Number(new URL(BASE).port), new URL(BASE).hostname);
    let buf = '';
    s.on('data', (d) => { buf += d; });
    s.on('error', () => resolve(buf));
    s.on('close', () => resolve(buf));
    s.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0, 0, 0xa1, 0x03, 0x03, 0x0d, 0x0a, 0x0d, 0x0a]));
    setTimeout(() => s.destroy(), 3000);
  });
  assert(r === '' || /^HTTP\/1\.[01] 4\d\d/.test(r), `got ${JSON.stringify(r.slice(0, 60))}`);
});
await test('headers too large -> 4xx', async () => {
  const r = await request('GET', '/health', { headers: { 'X-Big': 'y'.repeat(200000) } }).catch((e) => ({ status: 'closed', e }));
  assert(r.status === 'closed' || (r.status >= 400 && r.status < 500), `status ${r.status}`);
});

await test('server still healthy after all of the above', async () => {
  const h = await health();
  eq(h && h.status, 'ok', 'health status');
  const r = await chat({ temperature: 0 });
  eq(r.status, 200, 'a normal request still works');
});

done();
