#!/usr/bin/env bash
# t_chat_tty.sh — `sala chat` driven through a real terminal (tmux send-keys / capture-pane) on a small
# synthetic model (random weights) that carries the MiniCPM tokenizer:
#   * two turns answered, each ending at -n with a fresh "> " prompt; the second turn feeds only its new
#     tokens (its prompt count, from -v, is exactly the message + the close of the first answer);
#   * /reset clears the conversation: the same first message then gets the same answer as at the start
#     (same seed, sampler and session reset);
#   * Ctrl-C in the middle of a long answer stops it and returns to the prompt; the chat still answers
#     after that; Ctrl-C at the prompt prints a hint, a second one quits;
#   * Ctrl-C while a long message is still being prefilled stops it and clears the conversation.
# Skips (0 passed, 0 failed + a SKIP line) only when tmux is missing. $SALA: the binary (default build/sala).
set -u
SALA=${SALA:-build/sala}
case $SALA in /*) ;; *) SALA=$PWD/$SALA ;; esac
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; shift; for l in "$@"; do echo "     $l"; done; }
if ! command -v tmux >/dev/null 2>&1; then
  echo "SKIP t_chat_tty.sh: tmux is not installed (scripts/install-deps.sh installs it)"
  echo "0 passed, 0 failed"
  exit 0
fi
T=$(mktemp -d /tmp/sala_t_chat.XXXXXX)
SOCK="sala_t_chat_$$"
TM() { tmux -L "$SOCK" "$@"; }
cleanup() { TM kill-server >/dev/null 2>&1; rm -rf "$T"; }
trap cleanup EXIT

if ! "$SALA" synth -o "$T/model" --preset small --tokenizer tests/data/tokenizer/minicpm >"$T/synth.log" 2>&1; then
  bad "synth a small model with the MiniCPM tokenizer" "$(tail -3 "$T/synth.log")"
  echo "$pass passed, $fail failed"; exit 1
fi

screen() { TM capture-pane -p -J -t "$1" -S -2000 2>/dev/null; }
# wait_for SESSION SECONDS COMMAND...: poll until COMMAND (fed the screen on stdin) succeeds
wait_for() {
  local s=$1 secs=$2; shift 2
  local end=$((SECONDS + secs))
  while ((SECONDS < end)); do
    if screen "$s" | "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  return 1
}
# at least N prompt lines ("> " + what was typed; an empty one shows as ">") and the last line of the
# screen is an empty prompt
has_prompts() { local n; n=$(grep -cE '^>( |$)'); [ "$n" -ge "$1" ]; }
ends_at_prompt() { local last; last=$(grep -v '^$' | tail -n 1); [ "$last" = ">" ] || [ "$last" = "> " ]; }
ready() { local in; in=$(cat); has_prompts "$1" <<<"$in" && ends_at_prompt <<<"$in"; }

# ---- session A: two turns, /reset, same answer again ----
A=chatA
TM new-session -d -s "$A" -x 160 -y 60 "$SALA chat -m $T/model -n 12 --seed 7 -v 2>$T/a.err; echo CHAT-EXITED rc=\$?; sleep 30"
if wait_for "$A" 60 ready 1; then ok "chat starts with a '> ' prompt"
else bad "chat starts with a '> ' prompt" "$(screen "$A" | tail -5)" "$(tail -5 "$T/a.err")"; fi

TM send-keys -t "$A" "Hello there" Enter
if wait_for "$A" 90 ready 2; then ok "turn 1 answered, back at the prompt"
else bad "turn 1 answered" "$(screen "$A" | tail -5)"; fi
scr1=$(screen "$A")
ans1=$(grep -A1 -x '> Hello there' <<<"$scr1" | sed -n 2p)

TM send-keys -t "$A" "Hello there" Enter
if wait_for "$A" 90 ready 3; then ok "turn 2 answered, back at the prompt"
else bad "turn 2 answered" "$(screen "$A" | tail -5)"; fi
mapfile -t pr < <(grep -o 'prompt: *[0-9]*' "$T/a.err" | grep -o '[0-9]*$')
mapfile -t gen < <(grep -o 'generated: *[0-9]*' "$T/a.err" | grep -o '[0-9]*$')
# the same message again: its render is the same (no bos in this template), plus the answer's last
# token (sampled, not yet fed) and "<|im_end|>\n" (3 ids) closing the answer: exactly 4 more
if [ "${#pr[@]}" -ge 2 ] && [ "${pr[1]}" = $((pr[0] + 4)) ]; then
  ok "turn 2 feeds only its new tokens (${pr[1]} = ${pr[0]} + pending + <|im_end|>\\n; history was $((pr[0] + gen[0])))"
else
  bad "turn 2 feeds only its new tokens" "prompt counts: ${pr[*]:-none}, generated: ${gen[*]:-none}"
fi
if grep -q "answer cut at -n tokens" <<<"$(screen "$A")"; then ok "answers end at -n with a note"
else bad "answers end at -n with a note" "$(screen "$A" | tail -8)"; fi

TM send-keys -t "$A" "/reset" Enter
if wait_for "$A" 20 grep -q "conversation cleared"; then ok "/reset clears the conversation"
else bad "/reset" "$(screen "$A" | tail -5)"; fi
wait_for "$A" 10 ready 4
TM send-keys -t "$A" "Hello there" Enter
if wait_for "$A" 90 ready 5; then
  scr=$(screen "$A")
  ans2=$(grep -A1 -x '> Hello there' <<<"$scr" | grep -v -x -e '> Hello there' -e '--' | tail -n 1)
  mapfile -t pr < <(grep -o 'prompt: *[0-9]*' "$T/a.err" | grep -o '[0-9]*$')
  if [ -n "$ans1" ] && [ "$ans1" = "$ans2" ] && [ "${pr[2]:-x}" = "${pr[0]}" ] && [ "$(grep -c -x '> Hello there' <<<"$scr")" = 3 ]; then
    ok "after /reset the same message gets the same answer (fresh session, reseeded sampler)"
  else
    bad "after /reset the same message gets the same answer" "first:  $ans1" "second: $ans2" "prompt counts ${pr[*]}"
  fi
else
  bad "answer after /reset" "$(screen "$A" | tail -5)"
fi
TM send-keys -t "$A" "/exit" Enter
if wait_for "$A" 20 grep -q "CHAT-EXITED rc=0"; then ok "/exit quits with status 0"
else bad "/exit quits" "$(screen "$A" | tail -5)"; fi

# ---- session B: Ctrl-C mid-answer, then at the prompt ----
B=chatB
TM new-session -d -s "$B" -x 160 -y 60 "$SALA chat -m $T/model -n 100000 --seed 9 2>$T/b.err; echo CHAT-EXITED rc=\$?; sleep 30"
wait_for "$B" 60 ready 1
TM send-keys -t "$B" "Tell me a long story" Enter
# wait until the answer is streaming (some text after the message line), then interrupt
if wait_for "$B" 60 bash -c 'grep -A1 -x "> Tell me a long story" | tail -n 1 | grep -q .'; then
  sleep 1
  TM send-keys -t "$B" C-c
  if wait_for "$B" 20 ready 2 && grep -q "(stopped)" <<<"$(screen "$B")"; then
    ok "Ctrl-C stops the answer and returns to the prompt"
  else
    bad "Ctrl-C stops the answer" "$(screen "$B" | tail -5)" "$(tail -3 "$T/b.err")"
  fi
else
  bad "long answer streams" "$(screen "$B" | tail -5)" "$(tail -3 "$T/b.err")"
fi
TM send-keys -t "$B" "Another one" Enter
if wait_for "$B" 60 bash -c 'grep -A1 -x "> Another one" | tail -n 1 | grep -q .'; then
  TM send-keys -t "$B" C-c
  if wait_for "$B" 20 ready 3; then ok "the chat answers again after an interrupted answer"
  else bad "answers after an interruption" "$(screen "$B" | tail -5)"; fi
else
  bad "answers after an interruption" "$(screen "$B" | tail -5)"
fi
TM send-keys -t "$B" C-c
if wait_for "$B" 10 grep -q "Ctrl-C again to quit"; then ok "Ctrl-C at the prompt: a hint"
else bad "Ctrl-C at the prompt: a hint" "$(screen "$B" | tail -5)"; fi
TM send-keys -t "$B" C-c
if wait_for "$B" 10 grep -q "CHAT-EXITED rc=0"; then ok "a second Ctrl-C at the prompt quits"
else bad "a second Ctrl-C at the prompt quits" "$(screen "$B" | tail -5)"; fi

# ---- session C: Ctrl-C while a long message is still being read (prefill, one token per chunk) ----
C=chatC
TM new-session -d -s "$C" -x 160 -y 60 "$SALA chat -m $T/model -n 4 --chunk 1 --seed 5 2>$T/c.err; echo CHAT-EXITED rc=\$?; sleep 30"
wait_for "$C" 60 ready 1
# 3000 digits = 3000 tokens (one per digit): past the chat's 1024-token progress threshold, and under the
# terminal's 4096-byte line. The progress line on stderr tells that the prefill is running; Ctrl-C is sent
# then, not after a fixed delay (on a loaded machine the typing alone can outlast any delay).
long=$(for i in $(seq 3000); do printf '%d' $((i % 10)); done)
TM send-keys -t "$C" -l "$long"
TM send-keys -t "$C" Enter
end=$((SECONDS + 60))
until grep -q "prefill" "$T/c.err" 2>/dev/null || ((SECONDS >= end)); do sleep 0.1; done
TM send-keys -t "$C" C-c
if wait_for "$C" 30 grep -q "interrupted while reading the message"; then
  ok "Ctrl-C during the prefill of a long message: stopped, conversation cleared"
else
  bad "Ctrl-C during the prefill" "$(screen "$C" | tail -4 | cut -c1-150)" "$(tail -3 "$T/c.err")"
fi
TM send-keys -t "$C" "Short one" Enter
if wait_for "$C" 60 bash -c 'grep -q "answer cut at -n tokens"'; then ok "the chat answers after an interrupted prefill"
else bad "answers after an interrupted prefill" "$(screen "$C" | tail -4 | cut -c1-150)"; fi
TM send-keys -t "$C" "/exit" Enter

# ---- stdin at end of file quits; piped input works ----
out=$(printf 'Hi\n' | timeout 60 "$SALA" chat -m "$T/model" -n 3 --seed 1 2>/dev/null); rc=$?
if [ $rc = 0 ] && [ "$(grep -c '^> ' <<<"$out")" = 2 ]; then ok "piped input: one answer, EOF quits"
else bad "piped input" "rc $rc" "$out"; fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
