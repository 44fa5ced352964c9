#!/usr/bin/env bash
# t_server.sh — `sala serve` end to end: a tiny synthetic checkpoint, the real server on a free loopback
# port, and clients over HTTP: the official `openai` npm package (tests/server/api.mjs: chat, completions,
# streaming, greedy output equal to `sala run`, disconnects, FIFO), raw HTTP for bad input
# (tests/server/bad.mjs), API keys, command-line errors, and a shutdown in the middle of a stream.
# Every server must exit 0 on SIGTERM (under ASan that includes "no leaks").
# The load test is tests/t_server_load.sh. Env: SALA (binary, default build/sala).
set -u
cd "$(dirname "$0")/.."
. tests/server/common.sh

srv_setup || srv_finish

# ---- command line
out=$("$SALA" serve 2>&1); rc=$?
[ $rc = 2 ] && grep -q -- "-m DIR" <<<"$out" && ok "serve without -m: usage error" || bad "serve without -m (rc $rc): $out"
out=$("$SALA" serve -m "$MODEL_DIR" --port 70000 2>&1); rc=$?
[ $rc = 2 ] && grep -q "port" <<<"$out" && ok "bad --port refused" || bad "bad --port (rc $rc): $out"
out=$("$SALA" serve -m "$MODEL_DIR" --parallel 0 2>&1); rc=$?
[ $rc = 2 ] && ok "bad --parallel refused" || bad "bad --parallel (rc $rc): $out"
out=$("$SALA" serve -m "$TMP/nonexistent" --port 0 2>&1); rc=$?
[ $rc = 1 ] && grep -qi "cannot load the model" <<<"$out" && ok "missing checkpoint: clear error" || bad "missing checkpoint (rc $rc): $out"
"$SALA" serve --help | grep -q -- "--api-key" && ok "serve --help" || bad "serve --help"

# ---- main server: the openai client and bad input
srv_start main -m "$MODEL_DIR" --alias sala-tiny -c 512 -t 1 --parallel 1 --max-body 1M || srv_finish
MAIN_PORT=$SRV_PORT
out=$("$SALA" serve -m "$MODEL_DIR" --port "$MAIN_PORT" -t 1 2>&1); rc=$?
[ $rc = 1 ] && grep -q "cannot listen" <<<"$out" && ok "port in use: clear error" || bad "port in use (rc $rc): $out"

if srv_node_ready; then
  SALA_MODEL=sala-tiny SALA_MODEL_DIR=$MODEL_DIR SALA_LOG=$SRV_LOG SALA_PARALLEL=1 srv_node api.mjs
else
  bad "openai npm package not installed (npm install in tests/server failed)"
fi
SALA_MODEL=sala-tiny SALA_CTX=512 SALA_MAX_BODY=1048576 srv_node bad.mjs
srv_stop

# ---- API key
srv_start auth -m "$MODEL_DIR" --alias sala-tiny -c 256 -t 1 --api-key s3cret-key || srv_finish
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
[ "$(code "$SRV_URL/health")" = 200 ] && ok "api key: /health needs none" || bad "api key: /health"
[ "$(code "$SRV_URL/v1/models")" = 401 ] && ok "api key: missing -> 401" || bad "api key: missing"
[ "$(code -H 'Authorization: Bearer wrong' "$SRV_URL/v1/models")" = 401 ] && ok "api key: wrong -> 401" || bad "api key: wrong"
[ "$(code -H 'Authorization: Bearer s3cret-key' "$SRV_URL/v1/models")" = 200 ] && ok "api key: right -> 200" || bad "api key: right"
body=$(curl -s -X POST "$SRV_URL/v1/chat/completions" -H 'Content-Type: application/json' -d '{"messages":[{"role":"user","content":"hi"}]}')
grep -q '"code":"invalid_api_key"' <<<"$body" && ok "api key: error body" || bad "api key: error body: $body"
[ "$(code -X POST -H 'Authorization: Bearer s3cret-key' "$SRV_URL/v1/nope")" = 404 ] && ok "api key: unknown URL with key -> 404" || bad "api key: 404"
if srv_node_ready; then
  SALA_KEY=s3cret-key SALA_MODEL=sala-tiny srv_node auth.mjs
fi
srv_stop

# ---- reasoning: a template whose generation prompt opens <think>
THINK_TOK=$TMP/think-tokenizer
mkdir -p "$THINK_TOK" && cp tests/data/tokenizer/minicpm/* "$THINK_TOK"/
printf '%s' "{% for message in messages %}{{'<|im_start|>' + message['role'] + '
' + message['content'] + '<|im_end|>' + '
'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant
<think>
' }}{% endif %}" >"$THINK_TOK/chat_template.jinja"
srv_start think -m "$MODEL_DIR" --tokenizer "$THINK_TOK" --alias sala-tiny -c 256 -t 1 || srv_finish
grep -q "opens <think>" "$SRV_LOG" && ok "think template recognised" || bad "think template: $(head -2 "$SRV_LOG")"
if srv_node_ready; then
  SALA_MODEL=sala-tiny SALA_MODEL_DIR=$MODEL_DIR SALA_TOKENIZER_DIR=$THINK_TOK srv_node think.mjs
fi
srv_stop

# ---- keep-alive comments during a long prefill; shutdown with a stream in flight and requests queued
srv_start stop -m "$MODEL_DIR" --alias sala-tiny -c 8192 --chunk 256 -t 1 --parallel 1 --keep-alive 0.02 || srv_finish
if srv_node_ready; then
  SALA_MODEL=sala-tiny srv_node keepalive.mjs
fi
curl -sN --max-time 60 "$SRV_URL/v1/completions" -H 'Content-Type: application/json' \
  -d '{"prompt":"Long","max_tokens":8000,"stream":true}' >"$TMP/stream.out" 2>&1 &
sp=$!
sleep 0.3
qp=()
for i in 1 2 3; do
  curl -s --max-time 60 "$SRV_URL/v1/completions" -H 'Content-Type: application/json' \
    -d '{"prompt":"Queued","max_tokens":8}' >"$TMP/queued$i.out" 2>&1 &
  qp+=($!)
done
sleep 0.5
t0=$(date +%s.%N)
srv_stop
t1=$(date +%s.%N)
wait "$sp" "${qp[@]}" 2>/dev/null
awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b - a < 10) }' && ok "shutdown with a stream in flight is quick" || bad "shutdown took $(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}') s"
grep -q '^data: {' "$TMP/stream.out" && ok "the stream had started before the shutdown" || bad "stream never started: $(head -c 300 "$TMP/stream.out")"
okq=1
for i in 1 2 3; do
  # each queued request gets the 503 answer, or (when the server was faster) nothing at all
  if [ -s "$TMP/queued$i.out" ] && ! grep -q 'server_shutting_down\|"choices"' "$TMP/queued$i.out"; then okq=0; fi
done
[ $okq = 1 ] && ok "queued requests answered 503 at shutdown" || bad "queued at shutdown: $(cat "$TMP"/queued*.out | head -c 400)"

srv_finish
