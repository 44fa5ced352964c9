// load.mjs — 32 concurrent clients against `sala serve`, several rounds: some stream through the openai
// client, some send plain requests, some disconnect early (while queued, or mid-stream). Every request that
// was not abandoned must get a complete answer (the greedy ones the same text in every round); after each round the server must be idle again, and its
// resident memory must not keep growing from round to round.
// Env: SALA_URL, SALA_MODEL, SALA_PID (server pid, for /proc/PID/status), SALA_LOAD_ROUNDS (default 5),
//      SALA_LOAD_CLIENTS (default 32), SALA_RSS_SLACK_KIB (default 8192).
import http from 'node:http';
import OpenAI from 'openai';
import { test, done, assert, eq, health, waitIdle, rssKiB, sleep, sseData, BASE } from './lib.mjs';

const MODEL = process.env.SALA_MODEL;
const PID = Number(process.env.SALA_PID);
const ROUNDS = Number(process.env.SALA_LOAD_ROUNDS || 5);
const CLIENTS = Number(process.env.SALA_LOAD_CLIENTS || 32);
const SLACK = Number(process.env.SALA_RSS_SLACK_KIB || 8192);
const client = new OpenAI({ baseURL: `${BASE}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 300000 });
const base = new URL(BASE);

// Raw POST that gives up after `abortMs` (or after the first SSE event when abortAfterEvent): the socket is
// destroyed, as a client that goes away does.
function rawPost(path, obj, { abortMs = 0, abortAfterEvent = false } = {}) {
  return new Promise((resolve) => {
    const body = JSON.stringify(obj);
    const req = http.request({ host: base.hostname, port: base.port, method: 'POST', path, agent: false,
      headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } }, (res) => {
      let text = '';
      res.on('data', (c) => {
        text += c;
        if (abortAfterEvent && text.includes('\n\n')) { req.destroy(); resolve({ aborted: true }); }
      });
      res.on('end', () => resolve({ status: res.statusCode, text }));
      res.on('error', () => resolve({ aborted: true }));
    });
    req.on('error', () => resolve({ aborted: true }));
    if (abortMs) setTimeout(() => { req.destroy(); resolve({ aborted: true }); }, abortMs);
    req.end(body);
  });
}

async function sdkStream(i) {
  const stream = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: `Client ${i} says hello.` }],
    max_tokens: 12, temperature: 0.7, seed: i, stream: true, stream_options: { include_usage: true } });
  let finish = null, usage = null, text = '';
  for await (const ch of stream) {
    if (ch.usage) usage = ch.usage;
    for (const c of ch.choices) {
      text += c.delta.content || '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert(finish === 'stop' || finish === 'length', `client ${i}: finish ${finish}`);
  assert(usage && usage.completion_tokens >= 1 && usage.completion_tokens <= 12, `client ${i}: usage ${JSON.stringify(usage)}`);
  return 'complete';
}

// Greedy answers must not depend on what else runs at the same time: the first round's text of each
// greedy client is the reference for the later rounds.
const greedyText = new Map();
function sameAsBefore(key, text) {
  if (!greedyText.has(key)) greedyText.set(key, text);
  else eq(text, greedyText.get(key), `${key}: greedy text differs from the first round`);
}

async function plain(i) {
  const r = await rawPost('/v1/completions', { model: MODEL, prompt: `Number ${i}:`, max_tokens: 10, temperature: 0 });
  eq(r.status, 200, `client ${i} status`);
  const j = JSON.parse(r.text);
  assert(['stop', 'length'].includes(j.choices[0].finish_reason), `client ${i}: finish ${j.choices[0].finish_reason}`);
  assert(j.usage.completion_tokens >= 1 && j.usage.completion_tokens <= 10, `client ${i}: usage`);
  sameAsBefore(`plain ${i}`, j.choices[0].text);
  return 'complete';
}

async function rawStream(i) {
  const r = await rawPost('/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: `Stream ${i}` }], max_tokens: 10, stream: true, temperature: 0 });
  eq(r.status, 200, `client ${i} status`);
  const d = sseData(r.text);
  eq(d[d.length - 1], '[DONE]', `client ${i}: last event`);
  const last = JSON.parse(d[d.length - 2]);
  assert(last.choices[0].finish_reason, `client ${i}: no finish_reason`);
  const text = d.slice(0, -1).map((x) => JSON.parse(x).choices.map((c) => (c.delta.content || '') + (c.delta.reasoning_content || '')).join('')).join('');
  sameAsBefore(`stream ${i}`, text);
  return 'complete';
}

async function quitter(i) {
  // gives up while most likely still queued, or mid-stream after the first event
  if ((i >> 2) % 2) await rawPost('/v1/completions', { model: MODEL, prompt: `Quitter ${i}`, max_tokens: 200 }, { abortMs: 5 + (i % 7) * 15 });
  else await rawPost('/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: `Quitter ${i}` }], max_tokens: 200, stream: true }, { abortAfterEvent: true });
  return 'abandoned';
}

const kinds = [sdkStream, plain, rawStream, quitter];
const rss = [];
for (let round = 1; round <= ROUNDS; round++) {
  await test(`round ${round}: ${CLIENTS} concurrent clients all answered`, async () => {
    const t0 = Date.now();
    const results = await Promise.allSettled(Array.from({ length: CLIENTS }, (_, i) => kinds[i % kinds.length](i)));
    const bad = results.filter((r) => r.status === 'rejected');
    if (bad.length) throw new Error(`${bad.length} clients failed; first: ${bad[0].reason && bad[0].reason.message}`);
    const complete = results.filter((r) => r.value === 'complete').length;
    const h = await waitIdle(60000);
    eq(h.slots_busy, 0, 'slots busy after the round');
    eq(h.queued, 0, 'queue after the round');
    await sleep(100);
    const kib = rssKiB(PID);
    rss.push(kib);
    console.log(`   round ${round}: ${complete} complete answers, ${CLIENTS - complete} abandoned, ${Date.now() - t0} ms, RSS ${(kib / 1024).toFixed(1)} MiB`);
  });
}

await test(`memory does not grow across rounds (slack ${SLACK} KiB)`, async () => {
  assert(rss.length >= 3 && rss.every((x) => x > 0), `RSS samples ${rss}`);
  // round 1 warms up allocator pools and caches; from round 2 on the RSS must stay flat
  const ref = rss[1], last = rss[rss.length - 1];
  assert(last - ref <= SLACK, `RSS grew from ${ref} KiB (round 2) to ${last} KiB (round ${rss.length})`);
});

await test('server healthy after the load', async () => {
  const h = await health();
  eq(h.status, 'ok');
  const r = await client.completions.create({ model: MODEL, prompt: 'After', max_tokens: 2, temperature: 0 });
  assert(r.choices[0].text !== undefined);
});

done();
