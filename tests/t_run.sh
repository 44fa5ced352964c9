#!/usr/bin/env bash
# t_run.sh — `sala run` end to end on the golden checkpoint tiny-dense (vocab 512, no tokenizer of its own):
#   * greedy generation from the first 200 ids of case decode_200_100 equals the greedy continuation
#     derived independently: its first token is the argmax of the golden logits row P-1 (from the case
#     file), the rest come from a small C helper that loops sala_session_eval + argmax itself (and, when
#     `sala logits` is available, from iterating its logits too);
#   * the same through stdin ids, a small prefill chunk, and an exact -c;
#   * eos, stop strings (with the MiniCPM tokenizer over ids < 512), seeds, error paths (prompt past -c,
#     ids outside the vocabulary, a tokenizer larger than the model, bad options), the random-weights note;
#   * `sala info` plans the GPU and the CPU at the chunk each engine's session would take.
# Prints "N passed, N failed" at the end. The binary is $SALA (default build/sala).
set -u
SALA=${SALA:-build/sala}
BUILD=${BUILD:-build}
GOLD=tests/data/golden/tiny-dense
CASE=$GOLD/case_decode_200_100.safetensors
TOK=tests/data/tokenizer/minicpm
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; shift; for l in "$@"; do echo "     $l"; done; }
T=$(mktemp -d /tmp/sala_t_run.XXXXXX)
trap 'rm -rf "$T"' EXIT

# ---- the helper: golden case access and an independent greedy loop over the public API ----
cat >"$T/helper.c" <<'EOF'
/* t_run.sh helper: `ids CASE N` prints the first N input ids of a golden case; `first CASE` the argmax
 * of the golden logits row P-1; `greedy MODEL IDSFILE N` the greedy continuation computed with one
 * prefill call and single-token calls (no sampler, no generate loop); `lastmax FILE V` the argmax of the
 * last row of a float32 [T, V] file (what `sala logits` writes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sala.h"
#include "model/safetensors.h"
static const st_tensor *need(st_file *f, const char *n) {
    const st_tensor *t = st_find(f, n);
    if (!t) { fprintf(stderr, "helper: no tensor %s\n", n); exit(1); }
    return t;
}
static int argmax(const float *z, int64_t n) { int b = 0; for (int64_t i = 1; i < n; i++) if (z[i] > z[b]) b = (int)i; return b; }
int main(int argc, char **argv) {
    if (argc >= 4 && !strcmp(argv[1], "ids")) {
        st_file f; if (st_open(&f, argv[2])) { fprintf(stderr, "helper: %s\n", sala_last_error()); return 1; }
        const st_tensor *t = need(&f, "input_ids"); const int32_t *v = t->data; int n = atoi(argv[3]);
        for (int i = 0; i < n && i < t->shape[0]; i++) printf(i ? " %d" : "%d", v[i]);
        printf("\n"); st_close(&f); return 0;
    }
    if (argc >= 3 && !strcmp(argv[1], "first")) {
        st_file f; if (st_open(&f, argv[2])) { fprintf(stderr, "helper: %s\n", sala_last_error()); return 1; }
        const st_tensor *lg = need(&f, "logits"), *rows = need(&f, "rows"), *pl = need(&f, "prompt_len");
        int P = ((const int32_t *)pl->data)[0]; int64_t V = lg->shape[1]; int r = -1;
        for (int i = 0; i < rows->shape[0]; i++) if (((const int32_t *)rows->data)[i] == P - 1) r = i;
        if (r < 0) return 1;
        printf("%d\n", argmax((const float *)lg->data + r * V, V)); st_close(&f); return 0;
    }
    if (argc >= 5 && !strcmp(argv[1], "greedy")) {
        FILE *fp = fopen(argv[3], "r"); if (!fp) return 1;
        static int32_t ids[100000]; int n = 0; while (n < 100000 && fscanf(fp, "%d", &ids[n]) == 1) n++; fclose(fp);
        int N = atoi(argv[4]);
        sala_model *m; sala_model_params mp = sala_model_default_params();
        if (sala_model_load(argv[2], &mp, &m)) { fprintf(stderr, "helper: %s\n", sala_last_error()); return 1; }
        sala_model_info info; sala_model_get_info(m, &info);
        sala_session *s; if (sala_session_new(m, NULL, &s)) { fprintf(stderr, "helper: %s\n", sala_last_error()); return 1; }
        float *z = malloc(sizeof(float) * info.vocab);
        if (sala_session_eval(s, ids, n, SALA_LOGITS_LAST, z)) { fprintf(stderr, "helper: %s\n", sala_last_error()); return 1; }
        for (int k = 0; k < N; k++) {
            int32_t b = argmax(z, info.vocab);
            printf(k ? " %d" : "%d", b);
            if (k + 1 < N && sala_session_eval(s, &b, 1, SALA_LOGITS_LAST, z)) return 1;
        }
        printf("\n"); free(z); sala_session_free(s); sala_model_free(m); return 0;
    }
    if (argc >= 4 && !strcmp(argv[1], "lastmax")) { /* lastmax LOGITS.f32 V: argmax of the last row */
        FILE *fp = fopen(argv[2], "rb"); int V = atoi(argv[3]); if (!fp || V <= 0) return 1;
        float *z = malloc(sizeof(float) * V);
        if (fseek(fp, -(long)(sizeof(float) * V), SEEK_END) || fread(z, sizeof(float), V, fp) != (size_t)V) return 1;
        printf("%d\n", argmax(z, V)); fclose(fp); free(z); return 0;
    }
    fprintf(stderr, "usage: helper ids CASE N | first CASE | greedy MODEL IDSFILE N | lastmax FILE V\n"); return 2;
}
EOF
SANFLAGS=""
if nm "$BUILD/libsala.a" 2>/dev/null | grep -q __asan_init; then
  SANFLAGS="-fsanitize=address,undefined"
fi
if ! ${CC:-cc} -std=c11 -O1 -g $SANFLAGS -Iinclude -Isrc -D_GNU_SOURCE "$T/helper.c" "$BUILD/libsala.a" \
     -o "$T/helper" -fopenmp -lcjson -lmicrohttpd -lm -lpthread 2>"$T/cc.log"; then
  bad "helper builds" "$(cat "$T/cc.log")"
  echo "$pass passed, $fail failed"; exit 1
fi
H=$T/helper

# ---- greedy continuation of the golden decode case ----
"$H" ids "$CASE" 200 >"$T/ids.txt"
N=20
want_first=$("$H" first "$CASE")
want=$("$H" greedy "$GOLD" "$T/ids.txt" $N)
got=$("$SALA" run -m "$GOLD" --prompt-ids "$T/ids.txt" --print-ids -n $N --temp 0 2>"$T/err.txt")
rc=$?
if [ $rc = 0 ] && [ "$got" = "$want" ] && [ "${got%% *}" = "$want_first" ] && [ "$(wc -w <<<"$got")" = $N ]; then
  ok "greedy run = reference greedy continuation ($N tokens, first = golden argmax $want_first)"
else
  bad "greedy run = reference greedy continuation" "rc $rc" "got:  $got" "want: $want (first $want_first)" "$(tail -3 "$T/err.txt")"
fi
if grep -q "prompt: *200 tokens" "$T/err.txt" && grep -q "generated: *$N tokens" "$T/err.txt" &&
   grep -q "tok/s" "$T/err.txt" && grep -q "stop: length" "$T/err.txt"; then
  ok "timing summary on stderr"
else
  bad "timing summary on stderr" "$(cat "$T/err.txt")"
fi

# cross-check with `sala logits` (the lead's testing interface) when it is there: iterate argmax of the
# last row over growing inputs (the first 200 ids one prefill call, the rest one token per call)
if "$SALA" logits --help >/dev/null 2>&1; then
  cp "$T/ids.txt" "$T/seq.txt"
  seq_ok=1; lg=""
  for k in 1 2 3 4 5; do
    if ! "$SALA" logits -m "$GOLD" -i "$T/seq.txt" -o "$T/lg.bin" --decode-from 200 >"$T/lg.log" 2>&1; then seq_ok=0; break; fi
    next=$("$H" lastmax "$T/lg.bin" 512)
    lg="$lg${lg:+ }$next"
    echo " $next" >>"$T/seq.txt"
  done
  want3=$(cut -d' ' -f1-5 <<<"$want")
  if [ $seq_ok = 1 ] && [ "$lg" = "$want3" ]; then ok "sala logits argmax iteration agrees ($lg)"
  else bad "sala logits argmax iteration agrees" "got $lg want $want3" "$(tail -3 "$T/lg.log")"; fi
else
  echo "SKIP sala logits cross-check (no 'sala logits' command in this build)"
fi

got2=$(tr ' ' '\n' <"$T/ids.txt" | "$SALA" run -m "$GOLD" --prompt-ids - --print-ids -n $N --temp 0 --chunk 7 -c 220 2>/dev/null)
if [ "$got2" = "$want" ]; then ok "ids from stdin, chunk 7, -c 220: same continuation"
else bad "ids from stdin, chunk 7, -c 220: same continuation" "got:  $got2" "want: $want"; fi

# filling the context: -c 219 holds the 200 prompt ids + 19 fed tokens; the 20th is sampled, not fed
got3=$("$SALA" run -m "$GOLD" --prompt-ids "$T/ids.txt" --print-ids -n 100 --temp 0 -c 219 2>"$T/err3.txt")
if [ "$(wc -w <<<"$got3")" = 20 ] && [ "$got3" = "$want" ] && grep -q "stop: context" "$T/err3.txt"; then
  ok "context full: stops after filling -c (20 tokens, stop: context)"
else
  bad "context full" "got $got3" "$(tail -2 "$T/err3.txt")"
fi

# ---- error path: prompt past -c ----
out=$("$SALA" run -m "$GOLD" --prompt-ids "$T/ids.txt" -n 5 -c 100 2>&1); rc=$?
if [ $rc != 0 ] && grep -qi "context" <<<"$out" && grep -q "200" <<<"$out" && grep -q "100" <<<"$out"; then
  ok "prompt past -c fails clearly (exit $rc)"
else
  bad "prompt past -c fails clearly" "rc $rc" "$out"
fi

# ---- ids outside the vocabulary ----
echo "1 2 600 3" >"$T/badids.txt"
out=$("$SALA" run -m "$GOLD" --prompt-ids "$T/badids.txt" -n 5 2>&1); rc=$?
if [ $rc != 0 ] && grep -q "600" <<<"$out" && grep -qi "vocabulary" <<<"$out"; then ok "prompt id >= vocab fails clearly"
else bad "prompt id >= vocab fails clearly" "rc $rc" "$out"; fi
echo "1 2 x3" >"$T/badids2.txt"
out=$("$SALA" run -m "$GOLD" --prompt-ids "$T/badids2.txt" -n 5 2>&1); rc=$?
if [ $rc != 0 ] && grep -qi "token id list" <<<"$out"; then ok "malformed id file fails clearly"
else bad "malformed id file fails clearly" "rc $rc" "$out"; fi

# ---- a tokenizer bigger than the model: its ids do not fit ----
out=$("$SALA" run -m "$GOLD" --tokenizer "$TOK" -p "Hello world, 你好" -n 5 2>&1); rc=$?
if [ $rc != 0 ] && grep -qi "outside the model's vocabulary" <<<"$out" && grep -qi "tokenizer" <<<"$out"; then
  ok "tokenizer id >= model vocab fails clearly"
else
  bad "tokenizer id >= model vocab fails clearly" "rc $rc" "$out"
fi
out=$("$SALA" run -m "$GOLD" -p "Hello" -n 5 2>&1); rc=$?
if [ $rc != 0 ] && grep -qi "no tokenizer" <<<"$out" && grep -q -- "--prompt-ids" <<<"$out"; then ok "no tokenizer: clear hint"
else bad "no tokenizer: clear hint" "rc $rc" "$out"; fi

# ---- text output and stop strings (MiniCPM tokenizer over ids < 512) ----
text=$("$SALA" run -m "$GOLD" --tokenizer "$TOK" --prompt-ids "$T/ids.txt" -n 40 --temp 0 2>/dev/null)
rc=$?
if [ $rc = 0 ] && [ -n "$text" ]; then
  ok "text output through the tokenizer (${#text} chars)"
  # a stop string from the middle of the text: the output is exactly what comes before its first occurrence
  len=${#text}
  mid=$((len / 2))
  stop=${text:$mid:3}
  if [ ${#stop} = 3 ] && [ -n "${stop// /}" ]; then
    prefix=${text%%"$stop"*}
    got=$("$SALA" run -m "$GOLD" --tokenizer "$TOK" --prompt-ids "$T/ids.txt" -n 40 --temp 0 --stop "$stop" --stop "@@never@@" 2>"$T/err4.txt")
    if [ "$got" = "$prefix" ] && grep -q "stop: stop" "$T/err4.txt"; then ok "stop string: output ends right before it ('$stop')"
    else bad "stop string" "stop [$stop]" "got  [$got]" "want [$prefix]" "$(tail -1 "$T/err4.txt")"; fi
  else
    echo "SKIP stop string (no usable 3-character piece in the middle of the text)"
  fi
  # a stop string whose beginning ends the text but that never completes: the held-back tail is
  # released at the end, so the output is the whole text
  tail2=${text: -2}
  got=$("$SALA" run -m "$GOLD" --tokenizer "$TOK" --prompt-ids "$T/ids.txt" -n 40 --temp 0 --stop "${tail2}@@@" 2>"$T/err4b.txt")
  if [ "$got" = "$text" ] && grep -q "stop: length" "$T/err4b.txt"; then ok "partial stop string at the end: held back, then released"
  else bad "partial stop string at the end" "stop [${tail2}@@@]" "got  [$got]" "want [$text]"; fi
else
  bad "text output through the tokenizer" "rc $rc"
fi

# ---- eos: a config whose eos is the 2nd greedy token stops after the 1st ----
mkdir -p "$T/eosmodel"
for f in "$GOLD"/*.safetensors "$GOLD"/model.safetensors.index.json; do ln -s "$PWD/$f" "$T/eosmodel/"; done
second=$(cut -d' ' -f2 <<<"$want")
sed "/\"eos_token_id\"/,/\]/c\\  \"eos_token_id\": [$second]," "$GOLD/config.json" >"$T/eosmodel/config.json"
got=$("$SALA" run -m "$T/eosmodel" --prompt-ids "$T/ids.txt" --print-ids -n 10 --temp 0 2>"$T/err5.txt")
if [ "$got" = "$want_first" ] && grep -q "stop: eos" "$T/err5.txt"; then ok "eos id stops generation and is not printed"
else bad "eos stop" "got [$got] want [$want_first]" "$(tail -3 "$T/err5.txt")"; fi
got=$("$SALA" run -m "$T/eosmodel" --prompt-ids "$T/ids.txt" --print-ids -n 3 --temp 0 --ignore-eos 2>/dev/null)
if [ "$got" = "$(cut -d' ' -f1-3 <<<"$want")" ]; then ok "--ignore-eos continues past it"
else bad "--ignore-eos" "got [$got]"; fi

# ---- random-weights note ----
touch "$T/eosmodel/RANDOM_WEIGHTS"
out=$("$SALA" run -m "$T/eosmodel" --prompt-ids "$T/ids.txt" --print-ids -n 1 --temp 0 2>&1 >/dev/null)
if grep -qi "random weights" <<<"$out"; then ok "RANDOM_WEIGHTS marker: said on stderr"
else bad "RANDOM_WEIGHTS marker" "$out"; fi
rm "$T/eosmodel/RANDOM_WEIGHTS"
out=$("$SALA" run -m "$T/eosmodel" --prompt-ids "$T/ids.txt" --print-ids -n 1 --temp 0 2>&1 >/dev/null)
if ! grep -qi "random weights" <<<"$out"; then ok "no marker: no random-weights note"
else bad "no marker: no random-weights note" "$out"; fi

# ---- sampling: a seed reproduces, penalties take effect ----
s1=$("$SALA" run -m "$GOLD" --prompt-ids "$T/ids.txt" --print-ids -n 15 --temp 1.5 --top-k 0 --top-p 1 --min-p 0 --seed 42 2>/dev/null)
s2=$("$SALA" run -m "$GOLD" --prompt-ids "$T/ids.txt" --print-ids -n 15 --temp 1.5 --top-k 0 --top-p 1 --min-p 0 --seed 42 2>/dev/null)
s3=$("$SALA" run -m "$GOLD" --prompt-ids "$T/ids.txt" --print-ids -n 15 --temp 1.5 --top-k 0 --top-p 1 --min-p 0 --seed 43 2>/dev/null)
if [ -n "$s1" ] && [ "$s1" = "$s2" ] && [ "$s1" != "$s3" ]; then ok "same seed = same tokens, other seed differs"
else bad "seeded sampling" "42: $s1" "42: $s2" "43: $s3"; fi
# a huge presence penalty forbids generating any token twice
pen=$("$SALA" run -m "$GOLD" --prompt-ids "$T/ids.txt" --print-ids -n 30 --temp 0 --presence-penalty 1e9 2>/dev/null)
dups=$(tr ' ' '\n' <<<"$pen" | sort | uniq -d | wc -l)
plain=$(cut -d' ' -f1-20 <<<"$want")
if [ "$(wc -w <<<"$pen")" = 30 ] && [ "$dups" = 0 ]; then ok "presence penalty: no generated token repeated"
else bad "presence penalty" "got $pen" "$dups repeated"; fi
# repeat penalty: the greedy continuation changes (the tiny model repeats prompt tokens)
rp=$("$SALA" run -m "$GOLD" --prompt-ids "$T/ids.txt" --print-ids -n 20 --temp 0 --repeat-penalty 5 --repeat-last-n -1 2>/dev/null)
if [ "$(wc -w <<<"$rp")" = 20 ] && [ "$rp" != "$plain" ]; then ok "repeat penalty changes the greedy continuation"
else bad "repeat penalty" "got $rp"; fi

# ---- options ----
"$SALA" run --help >"$T/help.txt" 2>&1; rc=$?
if [ $rc = 0 ] && grep -q -- "--prompt-ids" "$T/help.txt" && grep -q -- "--repeat-penalty" "$T/help.txt"; then ok "--help"
else bad "--help" "rc $rc"; fi
"$SALA" run -m "$GOLD" --bogus 2>/dev/null; rc1=$?
"$SALA" run --prompt-ids "$T/ids.txt" 2>/dev/null; rc2=$?
"$SALA" run -m "$GOLD" --temp abc --prompt-ids "$T/ids.txt" 2>/dev/null; rc3=$?
"$SALA" run -m "$GOLD" --temp -1 --prompt-ids "$T/ids.txt" 2>"$T/e6.txt"; rc4=$?
"$SALA" run -m "$GOLD" --print-ids=1 --prompt-ids "$T/ids.txt" 2>/dev/null; rc5=$?
if [ $rc1 = 2 ] && [ $rc2 = 2 ] && [ $rc3 = 2 ] && [ $rc4 != 0 ] && grep -q temperature "$T/e6.txt" && [ $rc5 = 2 ]; then
  ok "bad options are refused"
else
  bad "bad options are refused" "unknown $rc1, no -m $rc2, bad number $rc3, negative temp $rc4, flag=value $rc5"
fi
got=$("$SALA" run -m "$GOLD" --prompt-ids "$T/ids.txt" --print-ids -n 0 2>"$T/err7.txt"); rc=$?
if [ $rc = 0 ] && [ -z "$got" ] && grep -q "generated: *0 tokens" "$T/err7.txt"; then ok "-n 0: prefill only"
else bad "-n 0" "rc $rc [$got]"; fi

# ---- sala info: each engine's plan at the chunk its session would allocate ----
i1=$("$SALA" info -m "$GOLD" -c 20000 2>&1); i2=$("$SALA" info -m "$GOLD" -c 300 2>&1)
i3=$("$SALA" info -m "$GOLD" -c 300 --chunk 100 2>&1)
if grep -q "prefill chunk 8192 on the GPU, 512 on the CPU" <<<"$i1" && grep -q "prefill chunk 300 on the GPU, 512 on the CPU" <<<"$i2" &&
  grep -q "prefill chunk 100 on the GPU, 100 on the CPU" <<<"$i3"; then ok "info: plans at each engine's chunk"
else bad "info: plans at each engine's chunk" "$(grep 'prefill chunk' <<<"$i1$i2$i3")"; fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
