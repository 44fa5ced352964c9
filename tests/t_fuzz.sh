#!/usr/bin/env bash
# t_fuzz.sh — every libFuzzer target briefly (FUZZ_SECONDS, default 10 s each) as part of `make test`.
# `make fuzz FUZZ_SECONDS=600` runs them long.
FUZZ_SECONDS=${FUZZ_SECONDS:-10} BUILD=${BUILD:-build} exec bash "$(dirname "$0")/fuzz.sh"
