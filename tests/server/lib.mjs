// lib.mjs — helpers shared by the `sala serve` test scripts (run by tests/t_server*.sh): a tiny test
// registry that prints "ok NAME" / "FAIL NAME: why" lines and a final "counts: P F" line for the shell
// script to add up, raw HTTP requests with Node's http module (for inputs no SDK would send), an SSE
// parser, and /proc readers for the server's memory.
import http from 'node:http';
import fs from 'node:fs';

export const BASE = process.env.SALA_URL || 'http://127.0.0.1:8080';
const base = new URL(BASE);

let passed = 0, failed = 0;

export async function test(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    const ms = Date.now() - t0;
    console.log(ms >= 500 ? `ok ${name} (${(ms / 1000).toFixed(1)} s)` : `ok ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack.split('\n').slice(0, 3).join(' | ') : e}`);
  }
}

export function done() {
  console.log(`counts: ${passed} ${failed}`);
  process.exit(failed ? 1 : 0);
}

export function assert(cond, msg) {
  if (!cond) throw new Error(msg || 'assertion failed');
}
export function eq(a, b, msg) {
  if (a !== b) throw new Error(`${msg || 'values differ'}: got ${JSON.stringify(a)}, want ${JSON.stringify(b)}`);
}

// Raw request. body: string | Buffer | undefined. Returns {status, headers, text, json}.
export function request(method, path, { body, headers = {}, timeout = 60000 } = {}) {
  return new Promise((resolve, reject) => {
    const h = { ...headers };
    if (body !== undefined && h['Content-Length'] === undefined && h['Transfer-Encoding'] === undefined)
      h['Content-Length'] = Buffer.byteLength(body);
    const req = http.request({ host: base.hostname, port: base.port, method, path, headers: h, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json = null;
        try { json = JSON.parse(text); } catch { /* not JSON */ }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.setTimeout(timeout, () => req.destroy(new Error(`timeout after ${timeout} ms: ${method} ${path}`)));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

export const post = (path, obj, opts = {}) =>
  request('POST', path, { ...opts, body: typeof obj === 'string' || Buffer.isBuffer(obj) ? obj : JSON.stringify(obj),
    headers: { 'Content-Type': 'application/json', ...(opts.headers || {}) } });

// Checks an OpenAI-style error answer.
export function expectError(r, status, { param, code } = {}) {
  if (r.status !== status) throw new Error(`status ${r.status}, want ${status}; body ${r.text.slice(0, 300)}`);
  const e = r.json && r.json.error;
  assert(e && typeof e === 'object', `no error object in ${r.text.slice(0, 300)}`);
  assert(typeof e.message === 'string' && e.message.length > 0, 'error.message missing');
  assert(typeof e.type === 'string' && e.type.length > 0, 'error.type missing');
  assert('param' in e && 'code' in e, 'error.param / error.code keys missing');
  if (param !== undefined) eq(e.param, param, 'error.param');
  if (code !== undefined) eq(e.code, code, 'error.code');
  return e;
}

// Parses an SSE body into the list of data payloads (strings).
export function sseData(text) {
  const out = [];
  for (const block of text.split('\n\n')) {
    for (const line of block.split('\n')) if (line.startsWith('data: ')) out.push(line.slice(6));
  }
  return out;
}

export function rssKiB(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = s.match(/VmRSS:\s+(\d+) kB/);
  return m ? Number(m[1]) : -1;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function health() {
  const r = await request('GET', '/health');
  return r.json;
}

// Waits until no slot is busy and nothing is queued (or the deadline passes); returns the last /health.
export async function waitIdle(ms = 20000) {
  const t0 = Date.now();
  let h;
  while (Date.now() - t0 < ms) {
    h = await health();
    if (h && h.slots_busy === 0 && h.queued === 0) return h;
    await sleep(20);
  }
  return h;
}
