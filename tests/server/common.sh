# common.sh — shell helpers of tests/t_server*.sh (sourced): pass/fail counting, the synthetic checkpoint,
# the npm install of the openai client, starting `sala serve` on a free loopback port and stopping it
# (SIGTERM; the exit status must be 0 and the log free of sanitizer reports).
SALA=${SALA:-build/sala}
pass=0
fail=0
ok() { echo "ok $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
SRV_PID=
TMP=$(mktemp -d)
srv_cleanup() {
  if [ -n "$SRV_PID" ] && kill -0 "$SRV_PID" 2>/dev/null; then kill -KILL "$SRV_PID" 2>/dev/null; fi
  rm -rf "$TMP"
}
trap srv_cleanup EXIT
srv_finish() {
  echo "$pass passed, $fail failed"
  [ "$fail" = 0 ] && exit 0
  exit 1
}

# sanitizer builds: smaller ASan quarantine so RSS measurements mean something; no leak false alarms from
# node or curl (only the server runs instrumented)
SRV_ASAN=0
if ldd "$SALA" 2>/dev/null | grep -q libasan; then SRV_ASAN=1; fi

srv_setup() {
  if [ ! -x "$SALA" ]; then bad "no binary at $SALA (run make)"; return 1; fi
  SALA_ABS=$(realpath "$SALA")
  if ! command -v node >/dev/null; then bad "node is not installed (scripts/install-deps.sh installs it)"; return 1; fi
  MODEL_DIR=$TMP/model
  if ! "$SALA" synth -o "$MODEL_DIR" --preset tiny --tokenizer tests/data/tokenizer/minicpm >"$TMP/synth.log" 2>&1; then
    bad "sala synth failed: $(tail -3 "$TMP/synth.log")"
    return 1
  fi
  if [ ! -d tests/server/node_modules/openai ]; then
    (cd tests/server && npm ci --no-audit --no-fund --loglevel=error >"$TMP/npm.log" 2>&1 ||
      npm install --no-audit --no-fund --loglevel=error >>"$TMP/npm.log" 2>&1) ||
      echo "note: npm install failed: $(tail -3 "$TMP/npm.log")"
  fi
  return 0
}
srv_node_ready() { [ -d tests/server/node_modules/openai ]; }

# srv_start NAME ARGS...: starts `sala serve ARGS --port 0`, waits for its "listening on" line.
# Sets SRV_PID, SRV_PORT, SRV_URL, SRV_LOG.
srv_start() {
  local name=$1
  shift
  SRV_LOG=$TMP/$name.log
  local asan=${ASAN_OPTIONS:-}
  if [ $SRV_ASAN = 1 ]; then asan="${asan:+$asan:}quarantine_size_mb=8:detect_leaks=1"; fi
  ASAN_OPTIONS=$asan "$SALA" serve "$@" --host 127.0.0.1 --port 0 >"$SRV_LOG" 2>&1 &
  SRV_PID=$!
  local i
  for i in $(seq 1 600); do
    SRV_PORT=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$SRV_LOG" | head -1)
    [ -n "$SRV_PORT" ] && break
    if ! kill -0 "$SRV_PID" 2>/dev/null; then break; fi
    sleep 0.1
  done
  if [ -z "$SRV_PORT" ]; then
    bad "server '$name' did not start: $(tail -5 "$SRV_LOG")"
    return 1
  fi
  SRV_URL=http://127.0.0.1:$SRV_PORT
  ok "server '$name' listening on port $SRV_PORT"
}

# srv_stop: SIGTERM, wait (bounded), exit status 0 and a clean log.
srv_stop() {
  [ -n "$SRV_PID" ] || return 0
  kill -TERM "$SRV_PID" 2>/dev/null
  local i rc
  for i in $(seq 1 300); do
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$SRV_PID" 2>/dev/null; then
    bad "server did not stop within 30 s of SIGTERM"
    kill -KILL "$SRV_PID"
  fi
  wait "$SRV_PID"
  rc=$?
  SRV_PID=
  if [ $rc = 0 ] && ! grep -qE 'AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:' "$SRV_LOG"; then
    ok "server stopped cleanly on SIGTERM"
  else
    bad "server exit status $rc; log: $(grep -E -A12 'Sanitizer|runtime error' "$SRV_LOG" | head -40)"
  fi
}

# srv_node SCRIPT: runs tests/server/SCRIPT against the running server and adds its counts.
srv_node() {
  local script=$1 out line p f
  out=$(cd tests/server && SALA_URL=$SRV_URL SALA_PID=$SRV_PID SALA=$SALA_ABS timeout 900 node "$script" 2>&1)
  local rc=$?
  echo "$out" | grep -v '^counts: '
  line=$(echo "$out" | grep '^counts: ' | tail -1)
  if [ -z "$line" ]; then
    bad "$script ended without a result (exit $rc)"
    return
  fi
  read -r _ p f <<<"$line"
  pass=$((pass + p))
  fail=$((fail + f))
}
