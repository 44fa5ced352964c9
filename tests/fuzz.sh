#!/usr/bin/env bash
# tests/fuzz.sh — build and run every libFuzzer target fuzz/fuzz_*.c (`make fuzz`).
#
# Each target is linked with every src/*.c and src/*/*.c (compiled once into $BUILD/fuzz/obj with coverage
# instrumentation, ASan and UBSan) into $BUILD/fuzz/NAME, then run for $FUZZ_SECONDS (default 20) seconds on
# a corpus in $BUILD/fuzz/corpus_NAME that is kept between runs. A target passes when it builds and runs the
# whole time without a crash, leak, sanitizer report or timeout; the log is $BUILD/fuzz/NAME.log and a
# crashing input is saved as $BUILD/fuzz/crash-NAME-*.
#
# Seeds (added to the corpus on every run; libFuzzer drops duplicates):
#   - tests/data/fuzz/NAME/* and fuzz/corpus/NAME/* when such a folder exists (a new target needs no edit here);
#   - by name: *tokenizer* gets texts from the tokenizer vectors, *safetensors* the first 64 KiB of the golden
#     checkpoints' .safetensors files, *config* the golden config.json files.
# A file fuzz/NAME.dict is passed as -dict. Environment for targets: SALA_TOKENIZER_DIR (default
# tests/data/tokenizer/minicpm), SALA_TEST_DATA (default tests/data).
# Other knobs: FUZZ_CC (clang), FUZZ_JOBS (parallel compiles), FUZZ_TARGETS="name1 name2" (subset),
# FUZZ_ARCHFLAGS (default: -mavx2 -mfma -mf16c when the CPU has them, as the Makefile does).
set -u
BUILD=${BUILD:-build}
SECS=${FUZZ_SECONDS:-20}
CC=${FUZZ_CC:-clang}
JOBS=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}
OUT=$BUILD/fuzz
export SALA_TOKENIZER_DIR=${SALA_TOKENIZER_DIR:-tests/data/tokenizer/minicpm}
export SALA_TEST_DATA=${SALA_TEST_DATA:-tests/data}
# leaks are reported; a slow input (>25 s) counts as a hang
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

cd "$(dirname "$0")/.." || exit 1
mkdir -p "$OUT/obj"

targets=()
for f in fuzz/fuzz_*.c; do
  [ -f "$f" ] || continue
  name=$(basename "$f" .c)
  if [ -n "${FUZZ_TARGETS:-}" ] && ! [[ " $FUZZ_TARGETS " == *" $name "* ]]; then continue; fi
  targets+=("$name")
done
if ((${#targets[@]} == 0)); then echo "fuzz: no fuzz/fuzz_*.c targets"; echo "0 passed, 0 failed"; exit 0; fi
if ! command -v "$CC" >/dev/null; then
  echo "fuzz: $CC not found (scripts/install-deps.sh installs clang)"; echo "0 passed, ${#targets[@]} failed"; exit 1
fi

# OpenMP with clang: libomp if present, else GCC's libgomp (its omp.h lives with GCC), else none.
probe=$(mktemp -d)
printf '#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n' >"$probe/omp.c"
OMP=()
if "$CC" -fopenmp "$probe/omp.c" -o "$probe/a" 2>/dev/null; then
  OMP=(-fopenmp)
else
  gomp_inc=$(dirname "$(gcc -print-file-name=include/omp.h 2>/dev/null)")
  if "$CC" -fopenmp=libgomp -I"$gomp_inc" "$probe/omp.c" -o "$probe/a" 2>/dev/null; then
    OMP=(-fopenmp=libgomp -I"$gomp_inc")
  else
    echo "fuzz: no OpenMP runtime for $CC; building without OpenMP"
  fi
fi
rm -rf "$probe"

# the same CPU features as the Makefile's build
ARCH=${FUZZ_ARCHFLAGS-$(grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo && echo -mavx2 -mfma -mf16c)}
CFLAGS=(-g -O1 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc -fno-omit-frame-pointer $ARCH "${OMP[@]}")
SAN=(-fsanitize=address,undefined)
LIBS=(-lcjson -lmicrohttpd -lm -lpthread)

# 1. the library sources, instrumented for coverage (fuzzer-no-link), rebuilt when a source or header changed
srcs=$(ls src/*.c src/*/*.c 2>/dev/null)
newest_h=$(ls -t include/*.h src/*.h src/*/*.h 2>/dev/null | head -n 1)
objs=()
stale=()
# other flags than last time (compiler, CPU features, OpenMP): rebuild everything
stamp="$CC ${CFLAGS[*]} ${SAN[*]}"
if [ "$(cat "$OUT/obj/.flags" 2>/dev/null)" != "$stamp" ]; then rm -f "$OUT"/obj/*.o; fi
printf '%s' "$stamp" >"$OUT/obj/.flags"
for s in $srcs; do
  o="$OUT/obj/$(echo "${s%.c}" | tr / _).o"
  objs+=("$o")
  if [ ! -f "$o" ] || [ "$s" -nt "$o" ] || { [ -n "$newest_h" ] && [ "$newest_h" -nt "$o" ]; }; then stale+=("$s"); fi
done
lib_ok=1
if ((${#stale[@]})); then
  echo "fuzz: compiling ${#stale[@]} library sources with $CC"
  export CC OUT
  printf '%s\n' "${stale[@]}" | xargs -P "$JOBS" -I{} sh -c '
      s={}; o="$OUT/obj/$(echo "${s%.c}" | tr / _).o"
      $CC "$@" -fsanitize=fuzzer-no-link -c "$s" -o "$o" 2>"$o.err" || { rm -f "$o"; echo "fuzz: cannot compile $s:"; head -n 20 "$o.err"; exit 1; }' \
      sh "${CFLAGS[@]}" "${SAN[@]}" || lib_ok=0
fi

seed_corpus() { # name corpus_dir
  local name=$1 dir=$2 i=0
  for d in "tests/data/fuzz/$name" "fuzz/corpus/$name"; do
    [ -d "$d" ] && cp -f "$d"/* "$dir"/ 2>/dev/null
  done
  case $name in
    *tokenizer*)
      printf 'Hello world' >"$dir/seed_hello"
      printf '<|im_start|>user\nHello, world!<|im_end|>\n<|im_start|>assistant\n' >"$dir/seed_chat"
      printf '\xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80 \xff\xfe \xe2\x96\x81 <s></s>' >"$dir/seed_mixed"
      # inputs starting with '{' or 0x0A are also loaded as tokenizer files by fuzz_tokenizer
      printf '%s' '{"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2,"<0x41>":3,"_":5},"merges":["a b"],"unk_token":"a","byte_fallback":true,"fuse_unk":true},"added_tokens":[{"id":4,"content":"<s>","special":true}],"normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"_"},{"type":"Replace","pattern":{"String":" "},"content":"_"}]},"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],"special_tokens":{"<s>":{"id":"<s>","ids":[4],"tokens":["<s>"]}}},"decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"_"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]}}' >"$dir/seed_tiny_json"
      [ -f "$SALA_TOKENIZER_DIR/tokenizer.model" ] && head -c 3000 "$SALA_TOKENIZER_DIR/tokenizer.model" >"$dir/seed_model_head"
      # each vector line (JSON text with the case's string inside) as one input
      for v in tests/data/tokenizer/vectors/curated.jsonl; do
        [ -f "$v" ] || continue
        while IFS= read -r line && ((i < 150)); do
          printf '%s' "$line" | head -c 512 >"$dir/seed_vec_$i"; i=$((i + 1))
        done <"$v"
      done ;;
    *safetensors*)
      for f in tests/data/golden/*/*.safetensors; do
        [ -f "$f" ] || continue
        head -c 65536 "$f" >"$dir/seed_$(echo "$f" | tr / _)"; i=$((i + 1)); ((i >= 8)) && break
      done ;;
    *config*)
      for f in tests/data/golden/*/config.json; do
        [ -f "$f" ] && cp -f "$f" "$dir/seed_$(echo "$f" | tr / _)"
      done ;;
  esac
}

pass=0; fail=0
for name in "${targets[@]}"; do
  bin=$OUT/$name
  log=$OUT/$name.log
  if ((lib_ok == 0)); then
    echo "FAIL $name (library sources do not compile)"; fail=$((fail + 1)); continue
  fi
  if ! "$CC" "${CFLAGS[@]}" "${SAN[@]}" -fsanitize=fuzzer "fuzz/$name.c" "${objs[@]}" -o "$bin" "${LIBS[@]}" \
      >"$log" 2>&1; then
    echo "FAIL $name (does not build; see $log)"; head -n 20 "$log" | sed 's/^/   /'; fail=$((fail + 1)); continue
  fi
  corpus=$OUT/corpus_$name
  mkdir -p "$corpus"
  seed_corpus "$name" "$corpus"
  extra=()
  [ -f "fuzz/$name.dict" ] && extra+=(-dict="fuzz/$name.dict")
  "$bin" -max_total_time="$SECS" -timeout=25 -rss_limit_mb=4096 -max_len=16384 -print_final_stats=1 \
      -artifact_prefix="$OUT/crash-$name-" "${extra[@]}" "$corpus" >"$log" 2>&1
  rc=$?
  runs=$(grep -aEo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -aEo '[0-9]+$' | tail -n 1)
  cov=$(grep -aEo 'cov: [0-9]+' "$log" | tail -n 1)
  if [ $rc = 0 ]; then
    echo "ok   $name (${SECS}s, ${runs:-?} runs, ${cov:-cov ?}, corpus $(ls "$corpus" | wc -l))"
    pass=$((pass + 1))
  else
    echo "FAIL $name (exit $rc after ${runs:-?} runs; log $log)"
    grep -aE 'ERROR|SUMMARY|==[0-9]+==|runtime error|Test unit written|deadly signal|Abrt' "$log" | head -n 15 | sed 's/^/   /'
    fail=$((fail + 1))
  fi
done
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
