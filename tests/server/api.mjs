// api.mjs — `sala serve` through the official `openai` npm client: models, chat and completions with and
// without streaming, usage, stop strings, seeds, greedy output equal to `sala run`, a disconnect that frees
// its slot, FIFO order and a responsive server during generation.
// Env: SALA_URL, SALA_MODEL (served id), SALA (binary), SALA_MODEL_DIR (checkpoint), SALA_LOG (server log),
//      SALA_PARALLEL (slots of the server under test).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import OpenAI from 'openai';
import { test, done, assert, eq, request, post, health, waitIdle, sleep, sseData, BASE } from './lib.mjs';

const MODEL = process.env.SALA_MODEL;
const client = new OpenAI({ baseURL: `${BASE}/v1`, apiKey: process.env.SALA_KEY || 'unused', maxRetries: 0, timeout: 120000 });
const PROMPT = 'Write a short poem about the sea.';
const user = (content) => [{ role: 'user', content }];

function checkUsage(u, maxCompletion) {
  assert(u && Number.isInteger(u.prompt_tokens) && u.prompt_tokens > 0, `prompt_tokens ${JSON.stringify(u)}`);
  assert(Number.isInteger(u.completion_tokens) && u.completion_tokens >= 1, 'completion_tokens');
  eq(u.total_tokens, u.prompt_tokens + u.completion_tokens, 'total_tokens');
  if (maxCompletion) assert(u.completion_tokens <= maxCompletion, `completion_tokens ${u.completion_tokens} > ${maxCompletion}`);
}

async function chatStream(params) {
  const stream = await client.chat.completions.create({ ...params, stream: true });
  let content = '', reasoning = '', finish = null, usage = null, role = null, n = 0, id = null;
  for await (const ch of stream) {
    n++;
    id = id || ch.id;
    eq(ch.object, 'chat.completion.chunk', 'chunk object');
    eq(ch.id, id, 'same id on every chunk');
    if (ch.usage) usage = ch.usage;
    for (const c of ch.choices) {
      if (c.delta.role) role = c.delta.role;
      if (c.delta.content) content += c.delta.content;
      if (c.delta.reasoning_content) reasoning += c.delta.reasoning_content;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  return { content, reasoning, finish, usage, role, n };
}

let greedy = null;
await test('GET /v1/models lists the model', async () => {
  const list = await client.models.list();
  const ids = [];
  for await (const m of list) ids.push(m.id);
  assert(ids.includes(MODEL), `ids ${ids}`);
  const one = await client.models.retrieve(MODEL);
  eq(one.id, MODEL);
  eq(one.object, 'model');
});

await test('GET /health', async () => {
  const h = await health();
  eq(h.status, 'ok');
  assert(h.slots >= 1 && h.slots_busy === 0, JSON.stringify(h));
});

await test('chat completion (greedy, non-streaming)', async () => {
  const r = await client.chat.completions.create({ model: MODEL, messages: user(PROMPT), max_tokens: 16, temperature: 0 });
  eq(r.object, 'chat.completion');
  assert(/^chatcmpl-/.test(r.id), `id ${r.id}`);
  eq(r.model, MODEL);
  eq(r.choices.length, 1);
  eq(r.choices[0].message.role, 'assistant');
  assert(typeof r.choices[0].message.content === 'string', 'content is a string');
  assert(['stop', 'length'].includes(r.choices[0].finish_reason), `finish_reason ${r.choices[0].finish_reason}`);
  checkUsage(r.usage, 16);
  if (r.choices[0].finish_reason === 'length') eq(r.usage.completion_tokens, 16, 'length stop at max_tokens');
  greedy = r;
});

await test('greedy output is deterministic', async () => {
  const r = await client.chat.completions.create({ model: MODEL, messages: user(PROMPT), max_tokens: 16, temperature: 0 });
  eq(r.choices[0].message.content, greedy.choices[0].message.content);
  eq(r.choices[0].message.reasoning_content, greedy.choices[0].message.reasoning_content);
});

await test('chat streaming equals non-streaming, with usage', async () => {
  const s = await chatStream({ model: MODEL, messages: user(PROMPT), max_tokens: 16, temperature: 0, stream_options: { include_usage: true } });
  eq(s.role, 'assistant', 'first delta carries the role');
  eq(s.content, greedy.choices[0].message.content, 'content');
  eq(s.reasoning, greedy.choices[0].message.reasoning_content || '', 'reasoning');
  eq(s.finish, greedy.choices[0].finish_reason, 'finish_reason');
  assert(s.usage, 'usage chunk');
  eq(s.usage.completion_tokens, greedy.usage.completion_tokens, 'completion_tokens');
  eq(s.usage.prompt_tokens, greedy.usage.prompt_tokens, 'prompt_tokens');
});

await test('chat streaming without include_usage has no usage', async () => {
  const s = await chatStream({ model: MODEL, messages: user(PROMPT), max_tokens: 4, temperature: 0 });
  eq(s.usage, null, 'usage');
  assert(s.finish, 'finish_reason');
});

await test('raw SSE framing ends with data: [DONE]', async () => {
  const r = await post('/v1/chat/completions', { model: MODEL, messages: user('Hi'), max_tokens: 5, stream: true });
  eq(r.status, 200);
  assert(/^text\/event-stream/.test(r.headers['content-type']), r.headers['content-type']);
  const data = sseData(r.text);
  eq(data[data.length - 1], '[DONE]', 'last event');
  for (const d of data.slice(0, -1)) JSON.parse(d);
  assert(r.text.endsWith('data: [DONE]\n\n'), 'ends with [DONE] and a blank line');
});

await test('max_completion_tokens is honoured', async () => {
  const r = await client.chat.completions.create({ model: MODEL, messages: user(PROMPT), max_completion_tokens: 3, temperature: 0 });
  checkUsage(r.usage, 3);
});

await test('system + multi-turn conversation', async () => {
  const r = await client.chat.completions.create({
    model: MODEL, max_tokens: 4, temperature: 0,
    messages: [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello!' }, { role: 'user', content: [{ type: 'text', text: 'How are' }, { type: 'text', text: 'you?' }] }],
  });
  assert(r.usage.prompt_tokens > 10, `prompt_tokens ${r.usage.prompt_tokens}`);
});

let compl = null;
await test('completion (greedy, non-streaming)', async () => {
  const r = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 20, temperature: 0 });
  eq(r.object, 'text_completion');
  assert(/^cmpl-/.test(r.id), `id ${r.id}`);
  eq(typeof r.choices[0].text, 'string');
  checkUsage(r.usage, 20);
  compl = r;
});

await test('completion streaming equals non-streaming', async () => {
  const stream = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 20, temperature: 0, stream: true, stream_options: { include_usage: true } });
  let text = '', finish = null, usage = null;
  for await (const ch of stream) {
    eq(ch.object, 'text_completion');
    if (ch.usage) usage = ch.usage;
    for (const c of ch.choices) {
      text += c.text;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  eq(text, compl.choices[0].text, 'text');
  eq(finish, compl.choices[0].finish_reason, 'finish_reason');
  eq(usage && usage.completion_tokens, compl.usage.completion_tokens, 'usage');
});

await test('completion with token-id prompt and echo', async () => {
  const r = await client.completions.create({ model: MODEL, prompt: [1, 1000, 2000, 3000], max_tokens: 3, temperature: 0, echo: true });
  eq(r.usage.prompt_tokens, 4);
  const r2 = await client.completions.create({ model: MODEL, prompt: 'Hello', max_tokens: 3, temperature: 0, echo: true });
  assert(r2.choices[0].text.startsWith('Hello'), `echo: ${JSON.stringify(r2.choices[0].text)}`);
});

await test('stop string cuts the text (string and array forms)', async () => {
  const full = compl.choices[0].text;
  // a stop string from the middle of the greedy text: the answer is the text before its first occurrence
  let k = -1;
  for (let i = 2; i + 2 <= full.length; i++) {
    const cand = full.slice(i, i + 2);
    if (cand.trim().length === 2) { k = i; break; }
  }
  assert(k > 0, `greedy text too short for a stop test: ${JSON.stringify(full)}`);
  const stop = full.slice(k, k + 2);
  const want = full.slice(0, full.indexOf(stop));
  for (const form of [stop, [stop, 'zzzzzzzzqqq']]) {
    const r = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 20, temperature: 0, stop: form });
    eq(r.choices[0].text, want, `text with stop ${JSON.stringify(form)}`);
    eq(r.choices[0].finish_reason, 'stop');
  }
  const stream = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 20, temperature: 0, stop, stream: true });
  let text = '';
  for await (const ch of stream) for (const c of ch.choices) text += c.text;
  eq(text, want, 'streamed text with stop');
});

await test('seed makes sampling repeatable', async () => {
  const p = { model: MODEL, prompt: 'The weather today', max_tokens: 12, temperature: 1.0, top_p: 0.9, seed: 1234 };
  const a = await client.completions.create(p);
  const b = await client.completions.create(p);
  eq(a.choices[0].text, b.choices[0].text);
});

await test('greedy output equals `sala run --chat --temp 0`', async () => {
  const bin = process.env.SALA, dir = process.env.SALA_MODEL_DIR;
  assert(bin && dir, 'SALA and SALA_MODEL_DIR must be set');
  const prompts = ['Hello', 'What is the capital of France?'];
  for (const p of prompts) {
    const out = execFileSync(bin, ['run', '-m', dir, '-p', p, '--chat', '--temp', '0', '-n', '24', '-t', '1'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const r = await client.chat.completions.create({ model: MODEL, messages: user(p), max_tokens: 24, temperature: 0 });
    const m = r.choices[0].message;
    const served = m.reasoning_content ? `<think>${m.reasoning_content}</think>${m.content}` : m.content;
    const runText = out.replace(/\n$/, '');
    if (m.reasoning_content) {
      // the think splitter trims whitespace around the tags: compare without it
      const norm = (s) => s.replace(/\s+/g, '');
      eq(norm(served), norm(runText), `prompt ${JSON.stringify(p)}`);
    } else eq(served, runText, `prompt ${JSON.stringify(p)}`);
  }
});

await test('completions greedy output equals `sala run --temp 0`', async () => {
  const bin = process.env.SALA, dir = process.env.SALA_MODEL_DIR;
  const out = execFileSync(bin, ['run', '-m', dir, '-p', 'Once upon a time', '--temp', '0', '-n', '20', '-t', '1'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  eq(compl.choices[0].text, out.replace(/\n$/, ''));
});

await test('a client that disconnects mid-stream frees its slot at once', async () => {
  await waitIdle();
  const ctl = new AbortController();
  const stream = await client.chat.completions.create({ model: MODEL, messages: user(PROMPT), max_tokens: 100000, temperature: 0, stream: true }, { signal: ctl.signal });
  let n = 0;
  try {
    for await (const ch of stream) { if (++n === 3) ctl.abort(); }
  } catch (e) { /* aborted */ }
  const t0 = Date.now();
  const h = await waitIdle(5000);
  const dt = Date.now() - t0;
  eq(h.slots_busy, 0, 'slot freed');
  assert(dt < 3000, `slot freed after ${dt} ms`);
  if (process.env.SALA_LOG) {
    await sleep(100);
    const log = fs.readFileSync(process.env.SALA_LOG, 'utf8');
    const m = [...log.matchAll(/cancelled after (\d+) \+ (\d+) tokens/g)].pop();
    assert(m, 'server log shows the cancelled request');
    // the context would have allowed hundreds of tokens: generation stopped right after the disconnect
    assert(Number(m[2]) <= 50, `generated ${m[2]} tokens after the client left`);
  }
});

await test('the server answers /health at once while a slot generates', async () => {
  await waitIdle();
  const slow = client.chat.completions.create({ model: MODEL, messages: user('x '.repeat(150)), max_tokens: 200, temperature: 0 });
  await sleep(20);
  let worst = 0;
  for (let i = 0; i < 10; i++) {
    const t0 = Date.now();
    const h = await health();
    worst = Math.max(worst, Date.now() - t0);
    eq(h.status, 'ok');
    await sleep(10);
  }
  assert(worst < 500, `/health took ${worst} ms`);
  await slow;
});

await test('queued requests are served first come, first served', async () => {
  const slots = Number(process.env.SALA_PARALLEL || 1);
  await waitIdle();
  const order = [];
  const reqs = [];
  // fill every slot with a longer request, then queue four short ones 30 ms apart
  for (let i = 0; i < slots; i++)
    reqs.push(client.completions.create({ model: MODEL, prompt: 'Fill', max_tokens: 60, temperature: 0 }).then(() => order.push(`fill${i}`)));
  await sleep(30);
  for (let i = 0; i < 4; i++) {
    reqs.push(client.completions.create({ model: MODEL, prompt: `Queued ${i}`, max_tokens: 2, temperature: 0 }).then(() => order.push(`q${i}`)));
    await sleep(30);
  }
  await Promise.all(reqs);
  const q = order.filter((x) => x.startsWith('q'));
  if (slots === 1) eq(q.join(','), 'q0,q1,q2,q3', 'completion order');
});

done();
