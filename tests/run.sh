#!/usr/bin/env bash
# Runs every test program in $BUILD/tests and every tests/t_*.sh script, adds up their
# "N passed, N failed" lines and ends with the total on one line.
set -u
BUILD=${BUILD:-build}
export SALA=${SALA:-$BUILD/sala}
export BUILD
# see tools/sala.c: spinning OpenMP waits are pathological on a busy machine
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
pass=0; fail=0; broken=()
run_one() {
  local name=$1; shift
  local log; log=$(mktemp)
  echo "== $name"
  "$@" >"$log" 2>&1; local rc=$?
  local line; line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  if [ -z "$line" ]; then
    cat "$log"; echo "   (no summary line, exit $rc): counted as one failure"
    fail=$((fail + 1)); broken+=("$name")
  else
    local p f; p=${line%% passed*}; f=${line#*, }; f=${f%% failed*}
    pass=$((pass + p)); fail=$((fail + f))
    if [ "$f" != 0 ] || [ $rc != 0 ]; then
      cat "$log"; broken+=("$name")
      [ "$f" = 0 ] && { fail=$((fail + 1)); echo "   (exit $rc with no failed test): counted as one failure"; }
    else
      grep -E '^(ok|SKIP) ' "$log" | sed 's/^/   /'
    fi
  fi
  rm -f "$log"
}
# SALA_TEST_ONLY="prefix1 prefix2": run only the test programs whose names start so, and no scripts
only=${SALA_TEST_ONLY:-}
selected() { [ -z "$only" ] && return 0; for p in $only; do [[ $1 == "$p"* ]] && return 0; done; return 1; }
for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] || continue
  selected "$(basename "$t")" || continue
  run_one "$(basename "$t")" "$t"
done
# SALA_TEST_SKIP="t_a.sh t_b.sh": scripts not to run, each named in the output as skipped (for machines that
# cannot have their tools, e.g. the GPU image of scripts/gpu-check.sh: no clang, node or -dev packages)
skip=${SALA_TEST_SKIP:-}
[ -n "$only" ] || for s in tests/t_*.sh; do
  [ -f "$s" ] || continue
  if [[ " $skip " == *" $(basename "$s") "* ]]; then echo "== $(basename "$s"): skipped (SALA_TEST_SKIP)"; continue; fi
  run_one "$(basename "$s")" bash "$s"
done
if ((${#broken[@]})); then echo "failing: ${broken[*]}"; fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
