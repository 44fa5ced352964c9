#!/usr/bin/env bash
# gpu-check.sh — the CUDA backend's whole check on a GPU machine, in one go.
#
#   scripts/gpu-check.sh stage            (here, no GPU needed) build with CUDA for sm_90a into build/gpu,
#                                         stage stripped binaries + the shared libraries the GPU machine
#                                         lacks (cJSON, libmicrohttpd and its TLS deps) into build/stage
#   scripts/gpu-check.sh run [PARTS...]   (on the GPU machine, repo root, build/stage carried) run PARTS,
#                                         default "info kernels golden bench"; logs go to $OUT (or out/)
#
# PARTS: info     nvidia-smi and the device as CUDA sees it
#        ceilings the card's limits measured (`sala bench --ceilings`: bf16 GEMM, HBM read and copy, L2 read,
#                 MUFU exp rate), the denominators of docs/PERF.md
#        kernels  tests/test_cuda_* (each kernel against the CPU reference ops)
#        golden   tests/test_golden with SALA_TEST_CUDA=1: every golden case on the GPU, fp32 mode with the
#                 CPU tolerances (several chunk sizes) and bf16 mode against the README's band
#        suite    the whole test suite with SALA_TEST_CUDA=1 (what `make test-cuda` runs; stage with STAGE_ALL=1),
#                 less the four scripts that need the build machine's tools (SALA_TEST_SKIP, see below)
#        bench    sala bench --device cuda on synthetic 9B weights, 8K..1M, then --arch full
#        bench-quick  the bench at 8K and 32K only
#        bench-nograph  the bench at ${BENCH_CTX_NG:-8k} with SALA_CUDA_GRAPH=0 (decode launched op by op), to
#                 compare with the graph decode on the same card; the graph-vs-no-graph logits check itself is
#                 tests/test_cuda_graph (part of kernels)
#        ncu      Nsight Compute (--set ${NCU_SET:-detailed}) on the kernels matching the regex $NCU_KERNEL in one
#                 bench call at ${NCU_CTX:-32k}, at most ${NCU_COUNT:-3} launches after skipping ${NCU_SKIP:-0}
#        sdpa     PyTorch SDPA (flash, causal, 32/2 heads, d 128) per layer at ${SDPA_CTX:-128k} (scripts/sdpa_ref.py),
#                 and the GPU time of sala's dense attention in a profiled --arch full prefill of that length
#        profile  one SALA_CUDA_PROFILE=1 bench call at ${PROFILE_CTX:-128k} (GPU time per kind of op), plus the
#                 ordinary bench at the same context (TTFT and decode with graphs)
# The device tool's `run` call: carry ["build/stage.tar.xz"] (or ["build/stage"] if it fits the 64 MiB with the
# tree), command `bash scripts/gpu-check.sh run ...`.
# BUILD_DIR (default build/gpu) and STAGE (default build/stage) name other folders, so that several
# worktrees can stage builds of their own: `STAGE=build/stage-x bash scripts/gpu-check.sh run ...`.
set -u
cd "$(dirname "$0")/.."

STAGE=${STAGE:-build/stage}
BUILD_DIR=${BUILD_DIR:-build/gpu}

stage() {
    set -e
    local arch="-gencode arch=compute_90a,code=sm_90a"
    make CUDA=1 BUILD=$BUILD_DIR CUARCH="$arch" -j"$(nproc)" all >/dev/null
    rm -rf $STAGE && mkdir -p $STAGE/tests $STAGE/lib
    cp $BUILD_DIR/sala $STAGE/sala
    # the CUDA tests and the golden test; STAGE_ALL=1 stages every test (for `run suite`; mind the 64 MiB
    # the device tool carries)
    if [ "${STAGE_ALL:-0}" = 1 ]; then cp $BUILD_DIR/tests/test_* $STAGE/tests/
    else cp $BUILD_DIR/tests/test_cuda_* $BUILD_DIR/tests/test_golden $STAGE/tests/; fi
    strip --strip-debug $STAGE/sala $STAGE/tests/*
    # libraries of the host side the GPU image does not have (CUDA's own come from its toolkit)
    for lib in $(ldd $BUILD_DIR/sala | awk '/=>/ {print $3}'); do
        case "$(basename "$lib")" in
        libc.so* | libm.so* | libdl.so* | librt.so* | libpthread.so* | libstdc++* | libgcc_s* | libgomp* | \
            libcudart* | libcublas* | ld-linux*) ;;
        *) cp -L "$lib" $STAGE/lib/ ;;
        esac
    done
    git rev-parse --short HEAD >$STAGE/COMMIT
    git status --porcelain src/cuda tests/test_cuda_*.c tools/cmd_bench.c | grep -q . && echo "+dirty" >>$STAGE/COMMIT
    du -sh $STAGE
    # the device tool carries at most 64 MiB with the tree: carry $STAGE.tar.xz, `run` unpacks it
    tar -cJf $STAGE.tar.xz -C "$(dirname $STAGE)" "$(basename $STAGE)"
    du -sh $STAGE.tar.xz
}

# one SALA_CUDA_PROFILE=1 bench call (the GPU time of each kind of op) of the SALA model at context(s) $1,
# appended to the log $2
profiled_call() {
    SALA_CUDA_PROFILE=1 timeout 300 $STAGE/sala bench --device cuda --arch sala --contexts "$1" --gen 8 >>"$2" 2>&1
}

# a context as `sala bench` takes it (N or Nk) in tokens
ctx_tokens() { case $1 in *k) echo $((${1%k} * 1024)) ;; *) echo "$1" ;; esac; }

run() {
    local out=${OUT:-out}
    [ -d $STAGE ] || { [ -f $STAGE.tar.xz ] && tar -xJf $STAGE.tar.xz -C "$(dirname $STAGE)"; }
    mkdir -p "$out"
    export LD_LIBRARY_PATH="$PWD/$STAGE/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
    export SALA_COMMIT="$(tr -d '\n' <$STAGE/COMMIT 2>/dev/null)"
    local parts=("$@")
    ((${#parts[@]})) || parts=(info kernels golden bench)
    local summary="$out/summary.txt"
    : >"$summary"
    for p in "${parts[@]}"; do
        local t0=$SECONDS
        case $p in
        info)
            { nvidia-smi; ls $STAGE/lib; echo "commit $SALA_COMMIT"; } >"$out/info.log" 2>&1
            echo "info: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)" >>"$summary"
            ;;
        ceilings)
            timeout 120 $STAGE/sala bench --device cuda --ceilings --contexts none >"$out/ceilings.log" 2>&1
            echo "ceilings (exit $?):" >>"$summary"
            grep -E '^  ' "$out/ceilings.log" >>"$summary"
            ;;
        kernels)
            : >"$out/kernels.log"
            for t in $STAGE/tests/test_cuda_*; do
                echo "== $(basename "$t")" >>"$out/kernels.log"
                SALA_TEST_CUDA=1 timeout "${KERNEL_TIMEOUT:-150}" "$t" >/tmp/k.log 2>&1
                local rc=$?
                cat /tmp/k.log >>"$out/kernels.log"
                echo "$(basename "$t"): $(tail -n 1 /tmp/k.log) (exit $rc)" >>"$summary"
            done
            ;;
        golden)
            SALA_TEST_CUDA=1 timeout "${GOLDEN_TIMEOUT:-300}" $STAGE/tests/test_golden >"$out/golden.log" 2>&1
            echo "test_golden (cuda): $(tail -n 1 "$out/golden.log")" >>"$summary"
            ;;
        suite)
            # the GPU image has no clang (fuzzing), no node (the server tests' client) and no -dev packages to
            # link a test helper against: those four scripts run on the build machine (make check), not here
            SALA_TEST_SKIP="${SALA_TEST_SKIP-t_fuzz.sh t_run.sh t_server.sh t_server_load.sh}" \
                BUILD=$STAGE SALA=$STAGE/sala SALA_TEST_CUDA=1 timeout 500 bash tests/run.sh >"$out/suite.log" 2>&1
            echo "suite: $(tail -n 1 "$out/suite.log")" >>"$summary"
            ;;
        bench | bench-quick)
            local ctx="8k,32k,128k,256k,512k,1024k" full="8k,32k"
            [ "$p" = bench-quick ] && ctx="8k,32k" && full="8k"
            rm -f "$out/bench.jsonl"
            timeout "${BENCH_TIMEOUT:-560}" $STAGE/sala bench --device cuda --arch sala --contexts "${BENCH_CTX:-$ctx}" \
                --gen 32 --budget-s "${BENCH_BUDGET:-420}" --json "$out/bench.jsonl" >"$out/bench.log" 2>&1
            [ -n "${BENCH_FULL-$full}" ] && timeout 200 $STAGE/sala bench --device cuda --arch full \
                --contexts "${BENCH_FULL-$full}" --gen 32 --budget-s 150 --json "$out/bench.jsonl" >>"$out/bench.log" 2>&1
            [ -n "${BENCH_PROFILE_CTX:-}" ] && profiled_call "$BENCH_PROFILE_CTX" "$out/bench.log"
            grep -vE '^  prefill' "$out/bench.log" | grep -E '^ *[0-9]|^arch|GPU time' >>"$summary"
            ;;
        bench-nograph)
            SALA_CUDA_GRAPH=0 timeout 200 $STAGE/sala bench --device cuda --arch sala --contexts "${BENCH_CTX_NG:-8k}" \
                --gen 32 --budget-s 150 --json "$out/bench-nograph.jsonl" >"$out/bench-nograph.log" 2>&1
            { echo "SALA_CUDA_GRAPH=0:"; grep -vE '^  prefill' "$out/bench-nograph.log" | grep -E '^ *[0-9]'; } >>"$summary"
            ;;
        profile)
            : >"$out/profile.log"
            profiled_call "${PROFILE_CTX:-128k}" "$out/profile.log"
            timeout 300 $STAGE/sala bench --device cuda --arch sala --contexts "${PROFILE_CTX:-128k}" --gen 32 \
                >>"$out/profile.log" 2>&1
            grep -vE '^  prefill' "$out/profile.log" | grep -E '^ *[0-9]|GPU time' >>"$summary"
            ;;
        ncu)
            # hardware counters of the kernels matching $NCU_KERNEL (a regex) in one bench call at ${NCU_CTX:-32k}
            timeout "${NCU_TIMEOUT:-300}" ncu --clock-control none -k "regex:${NCU_KERNEL:-.}" -c "${NCU_COUNT:-3}" --launch-skip "${NCU_SKIP:-0}" \
                --set "${NCU_SET:-detailed}" $STAGE/sala bench --device cuda --arch sala --contexts "${NCU_CTX:-32k}" \
                --gen 2 >"$out/ncu.log" 2>&1
            echo "ncu: $(grep -c 'Duration' "$out/ncu.log") kernel reports in ncu.log" >>"$summary"
            ;;
        sdpa)
            # the full-attention kernel against PyTorch SDPA (flash) at ${SDPA_CTX:-128k}: SDPA's time per layer, and
            # sala's dense attention GPU time of an --arch full prefill (all 32 layers, chunked) from the profile
            python3 scripts/sdpa_ref.py --ctx "$(ctx_tokens "${SDPA_CTX:-128k}")" >"$out/sdpa.log" 2>&1
            SALA_CUDA_PROFILE=1 timeout 400 $STAGE/sala bench --device cuda --arch full --contexts "${SDPA_CTX:-128k}" \
                --gen 2 --budget-s 380 >>"$out/sdpa.log" 2>&1
            grep -E '^sdpa|GPU time of a|^ *[0-9]' "$out/sdpa.log" | grep -v decode >>"$summary"
            ;;
        *) echo "unknown part $p" >>"$summary" ;;
        esac
        echo "  ($p: $((SECONDS - t0)) s)" >>"$summary"
    done
    cat "$summary"
}

case ${1:-} in
stage) stage ;;
run) shift; run "$@" ;;
*) sed -n '2,20p' "$0"; exit 2 ;;
esac
