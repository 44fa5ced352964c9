#!/usr/bin/env bash
# run-default.sh — the README's first command (`make run-default`): makes sure a small synthetic
# checkpoint with the real MiniCPM tokenizer exists in models/sala-small-random (random weights: the
# text is meaningless; the point is to see the engine load, prefill and stream), then generates 32
# tokens from a prompt with `sala run`.
# Environment: SALA (binary, default build/sala), MODEL (folder, default models/sala-small-random),
# PROMPT, N (tokens, default 32); extra arguments go to `sala run` (e.g. --device cuda, --temp 0).
set -euo pipefail
cd "$(dirname "$0")/.."
SALA=${SALA:-build/sala}
MODEL=${MODEL:-models/sala-small-random}
PROMPT=${PROMPT:-"The three most important ideas in computer science are"}
N=${N:-32}

if [ ! -x "$SALA" ]; then
  echo "run-default: $SALA is missing: build it first with 'make'" >&2
  exit 1
fi
if [ ! -f "$MODEL/config.json" ] || [ ! -f "$MODEL/tokenizer.json" ]; then
  echo "run-default: writing a small synthetic checkpoint (random weights) to $MODEL ..." >&2
  mkdir -p "$(dirname "$MODEL")"
  "$SALA" synth -o "$MODEL" --preset small --tokenizer tests/data/tokenizer/minicpm
fi

echo "================================================================================"
echo " $MODEL has RANDOM weights: the engine runs for real, but the words it"
echo " produces are meaningless. For real text, point -m at a MiniCPM-SALA checkpoint:"
echo "   $SALA run -m /path/to/MiniCPM-SALA -p \"...\" -n 128"
echo "================================================================================"
echo "prompt: $PROMPT"
echo "--------------------------------------------------------------------------------"
"$SALA" run -m "$MODEL" -p "$PROMPT" -n "$N" "$@"
echo "--------------------------------------------------------------------------------"
echo "(random weights: the text above is noise; timings above are real)"
