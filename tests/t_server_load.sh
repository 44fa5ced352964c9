#!/usr/bin/env bash
# t_server_load.sh — `sala serve` under load: 32 concurrent clients for several rounds (openai-client
# streams, plain requests, raw streams, clients that disconnect while queued or mid-stream) against a
# two-slot server on a tiny synthetic checkpoint (tests/server/load.mjs). Every request that was not
# abandoned must be answered completely, the server must be idle after each round, its RSS must not grow
# from round to round, and it must exit 0 on SIGTERM (under ASan: no leaks, no errors).
# Env: SALA (binary, default build/sala), SALA_LOAD_ROUNDS (default 5).
set -u
cd "$(dirname "$0")/.."
. tests/server/common.sh

srv_setup || srv_finish
if ! srv_node_ready; then
  bad "openai npm package not installed (npm install in tests/server failed)"
  srv_finish
fi
srv_start load -m "$MODEL_DIR" --alias sala-tiny -c 1024 -t 1 --parallel 2 --quiet || srv_finish
slack=6144
[ "$SRV_ASAN" = 1 ] && slack=16384
SALA_MODEL=sala-tiny SALA_RSS_SLACK_KIB=$slack srv_node load.mjs
srv_stop
srv_finish
