# sala: one Makefile. `make` builds the library and the `sala` binary; `make test` runs the CPU suite;
# `make CUDA=1` adds the CUDA backend; `make test-cuda` runs the GPU suite (on a machine with a GPU).
#
# Sources are found by wildcard: src/*.c and src/*/*.c go into libsala.a, tools/sala.c is the binary,
# every tests/test_*.c is one test program, every fuzz/fuzz_*.c one libFuzzer target.

BUILD   ?= build
CC      ?= gcc
CUDA    ?= 0
SAN     ?= 0
OPT     ?= -O2
CUARCH  ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_120,code=sm_120
NVCC    ?= /usr/local/cuda/bin/nvcc
CUDA_HOME ?= /usr/local/cuda

# AVX2/FMA/F16C when the build machine has them (the GPU machines do too).
ARCHFLAGS ?= $(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo && echo -mavx2 -mfma -mf16c)
CFLAGS  = -std=c11 $(OPT) $(ARCHFLAGS) -ffp-contract=fast -g -Wall -Wextra -Werror -Wno-unused-parameter -fopenmp -Iinclude -Isrc -D_GNU_SOURCE
LDLIBS  = -lcjson -lmicrohttpd -lm -lpthread
LDFLAGS = -fopenmp

ifeq ($(SAN),1)
  CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDFLAGS += -fsanitize=address,undefined
endif

SRC     = $(wildcard src/*.c src/*/*.c)
OBJ     = $(SRC:%.c=$(BUILD)/%.o)
CUSRC   =
CUOBJ   =
ifeq ($(CUDA),1)
  CUSRC  = $(wildcard src/cuda/*.cu)
  CUOBJ  = $(CUSRC:%.cu=$(BUILD)/%.o)
  CFLAGS += -DSALA_CUDA -I$(CUDA_HOME)/include
  LDLIBS += -L$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudart -lstdc++ -ldl -lrt
  NVFLAGS = -std=c++17 -O3 -g $(CUARCH) -Iinclude -Isrc -Xcompiler -fPIC,-Wall -DSALA_CUDA --expt-relaxed-constexpr
endif

LIB     = $(BUILD)/libsala.a
BIN     = $(BUILD)/sala
TESTSRC = $(wildcard tests/test_*.c)
TESTS   = $(TESTSRC:tests/%.c=$(BUILD)/tests/%)
FUZZSRC = $(wildcard fuzz/fuzz_*.c)
DEPS_OK = $(BUILD)/.deps-ok

.PHONY: all check cuda-build test asan fuzz fuzz-long format bench test-cuda clean deps run-default

all: $(BIN) $(TESTS)

# System packages (cJSON, libmicrohttpd, ...) are installed by the project's script when missing.
$(DEPS_OK): scripts/install-deps.sh
	@bash scripts/install-deps.sh
	@mkdir -p $(BUILD) && touch $@

deps: $(DEPS_OK)

$(BUILD)/%.o: %.c $(DEPS_OK) $(wildcard include/*.h src/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/%.o: %.cu $(wildcard include/*.h src/*.h src/cuda/*.h src/cuda/*.cuh)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@

$(LIB): $(OBJ) $(CUOBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

TOOLSRC = $(wildcard tools/*.c)
$(BIN): $(TOOLSRC) tools/cmds.h $(LIB)
	$(CC) $(CFLAGS) $(TOOLSRC) $(LIB) -o $@ $(LDFLAGS) $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/test.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(LIB) -o $@ $(LDFLAGS) $(LDLIBS)

# The README's test command (CI runs it): the CUDA backend built for every target card (it cannot run
# without a GPU, but it must compile and link), the suite, then the suite again under ASan + UBSan.
check:
	$(MAKE) cuda-build
	$(MAKE) test
	$(MAKE) asan

# `make CUDA=1` into build/cuda (sm_80, sm_90a, sm_120); where $(NVCC) is missing it says so and skips.
cuda-build:
	@if [ -x "$(NVCC)" ]; then $(MAKE) CUDA=1 BUILD=build/cuda all; \
	else echo "cuda-build: SKIP ($(NVCC) not found; the CUDA backend was not compiled)"; fi

test: $(BIN) $(TESTS)
	@BUILD=$(BUILD) bash tests/run.sh

# The suite under AddressSanitizer + UBSan. The golden cases run in quick mode there (no slow reference
# path, two chunk sizes): the sanitizers slow the fp32 math ~5x and the reference is checked by `make test`.
asan:
	SALA_GOLDEN_QUICK=1 $(MAKE) BUILD=build/asan SAN=1 OPT=-O1 test

# libFuzzer targets (clang). FUZZ_SECONDS per target; CI runs them briefly.
FUZZ_SECONDS ?= 20
fuzz: $(DEPS_OK)
	@BUILD=$(BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) bash tests/fuzz.sh

bench: $(BIN)
	@echo "see bench/ and docs/PERF.md; e.g. $(BIN) bench --help"

# The GPU suite (on a machine with a GPU): every kernel against the CPU reference ops (test_cuda_*) and
# every golden case on the GPU in fp32 and bf16 mode, chunked and one-shot (test_golden).
# scripts/gpu-check.sh does the same from a build staged here, plus the benchmark.
test-cuda:
	$(MAKE) CUDA=1 BUILD=build/cuda all
	@BUILD=build/cuda SALA_TEST_CUDA=1 SALA_TEST_ONLY="test_cuda_ test_golden" bash tests/run.sh

format:
	clang-format -i include/*.h $(wildcard src/*.c src/*.h src/*/*.c src/*/*.h src/cuda/*.cu src/cuda/*.cuh) tools/*.c tests/*.c tests/*.h $(wildcard fuzz/*.c)

# The README's first command: a synthetic checkpoint and a generation on it.
run-default: $(BIN)
	@bash scripts/run-default.sh

clean:
	rm -rf build
