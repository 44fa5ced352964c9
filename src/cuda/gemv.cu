/* gemv.cu — decode products: one to four rows against bf16 weights streamed once from memory.
 *
 * Decode is a pure stream over W. One row (T = 1) runs cu_gemv: each weight row is read once with 16-byte
 * loads, two batches of 8 per lane in flight, and the ops around the product can be folded into it (the
 * RMSNorm or output gate that makes the operand, SwiGLU or the residual update on the output); 2..4 rows
 * run k_gemv (two rows per warp, cu_gemv_rows). Both take fp32 or bf16 x (fp32 x needs no widened copy of
 * W). On the 9B shape a step's 129 GEMVs stream 18.35 GB at ≈ 2.8 TB/s with PDL (H100, diag of run 2).
 * cu_gemm_run (gemm.cu) sends T ≤ 4 here. */
#include <string.h>

#include "cuda/common.cuh"
#include "cuda/mma_core.cuh"
#include "cuda/pdl.cuh"

/* y[t, n] = alpha · x[t, :]·W[n, :] + beta · y[t, n] for t < T ≤ 4: one warp per pair of rows of W */
template <class XT, int T>
__global__ void __launch_bounds__(256) k_gemv(float *y, int64_t ldy, const XT *x, int64_t ldx, const bf16 *W,
                                              int64_t N, int64_t K, float alpha, float beta) {
    const int lane = threadIdx.x & 31;
    const int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
    const int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t n0 = 2 * warp; n0 < N; n0 += 2 * nwarps) {
        const bool two = n0 + 1 < N;
        const bf16 *w0 = W + n0 * K, *w1 = W + (two ? n0 + 1 : n0) * K;
        float acc[2][T];
#pragma unroll
        for (int t = 0; t < T; t++) acc[0][t] = acc[1][t] = 0.f;
        for (int64_t k = lane * 8; k < K; k += 256) {
            uint4 a = *(const uint4 *)(w0 + k), b = *(const uint4 *)(w1 + k);
            const bf16 *ha = (const bf16 *)&a, *hb = (const bf16 *)&b;
#pragma unroll
            for (int t = 0; t < T; t++) {
                float xv[8];
                const XT *xp = x + t * ldx + k;
                if (sizeof(XT) == 4) {
                    float4 u = *(const float4 *)xp, v = *(const float4 *)((const float *)xp + 4);
                    xv[0] = u.x, xv[1] = u.y, xv[2] = u.z, xv[3] = u.w, xv[4] = v.x, xv[5] = v.y, xv[6] = v.z, xv[7] = v.w;
                } else {
                    uint4 u = *(const uint4 *)xp;
                    const bf16 *hx = (const bf16 *)&u;
#pragma unroll
                    for (int i = 0; i < 8; i++) xv[i] = __bfloat162float(hx[i]);
                }
#pragma unroll
                for (int i = 0; i < 8; i++) {
                    acc[0][t] = fmaf(xv[i], __bfloat162float(ha[i]), acc[0][t]);
                    acc[1][t] = fmaf(xv[i], __bfloat162float(hb[i]), acc[1][t]);
                }
            }
        }
#pragma unroll
        for (int t = 0; t < T; t++) {
            float s0 = warp_sum(acc[0][t]), s1 = warp_sum(acc[1][t]);
            if (lane == 0) {
                float *p0 = y + t * ldy + n0;
                *p0 = beta == 0.f ? alpha * s0 : alpha * s0 + beta * *p0;
                if (two) p0[1] = beta == 0.f ? alpha * s1 : alpha * s1 + beta * p0[1];
            }
        }
    }
}

/* ---- the decode GEMV: one row, fused operand and output stages (cu_gemv) ----
 * 256 threads = 8 warps per block; a warp owns a contiguous range of items (an item = one output row, or
 * for SWIGLU the pair of rows i and N/2 + i) and streams each row in batches of NB 16-byte loads per lane,
 * lane j reading vectors j, j + 32, ... (the same lane split and summation order as k_gemv). The operand a
 * is built once per block in shared memory (each block recomputes the RMSNorm of the 4096-wide x from L2
 * instead of reading the output of a separate norm kernel). The grid is `bps` blocks per SM, sized so that
 * every warp has the same number of items (± 1). The first batches of weights are loaded before
 * pdl_wait(), so with PDL a GEMV starts streaming while the previous kernel drains; for some shapes a few more
 * batches go to shared memory (cp.async) before the wait as well (gv_stage_def).
 * Variants (cu_gemv_config): 0 = NB 8, one buffer, ≤ 64 registers; 1 = NB 16, one buffer; 2 = NB 8, two
 * buffers (the next batch loads while this one is summed: the default, fastest on an H100).
 * Trigger of the next kernel (PDL): 0 = when the block exits, 1 = after the operand is built, 2 = when a
 * warp starts its last batch. */
static __device__ __forceinline__ uint4 ld_stream(const uint4 *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

static __device__ __forceinline__ float dot8(uint4 w, const bf16 *xs, float acc) {
    uint4 u = *(const uint4 *)xs;
    const bf16 *hw = (const bf16 *)&w, *hx = (const bf16 *)&u;
#pragma unroll
    for (int i = 0; i < 8; i++) acc = fmaf(__bfloat162float(hx[i]), __bfloat162float(hw[i]), acc);
    return acc;
}
static __device__ __forceinline__ float dot8(uint4 w, const float *xs, float acc) {
    float4 u = *(const float4 *)xs, v = *(const float4 *)(xs + 4);
    const float xv[8] = {u.x, u.y, u.z, u.w, v.x, v.y, v.z, v.w};
    const bf16 *hw = (const bf16 *)&w;
#pragma unroll
    for (int i = 0; i < 8; i++) acc = fmaf(xv[i], __bfloat162float(hw[i]), acc);
    return acc;
}

/* a position in the warp's stream: item it, row r of the item, first vector vb of the batch */
struct gv_pos {
    int it, r, vb;
};

template <int NB, int R>
static __device__ __forceinline__ void gv_next(gv_pos &p, int nvec) {
    p.vb += 32 * NB;
    if (p.vb >= nvec) {
        p.vb = 0;
        if (++p.r == R) p.r = 0, p.it++;
    }
}

template <int NB>
static __device__ __forceinline__ void gv_load(uint4 (&buf)[NB], const bf16 *W, int64_t row, int K, int vb, int nvec) {
    const int lane = threadIdx.x & 31;
    const uint4 *wr = (const uint4 *)(W + row * (int64_t)K);
#pragma unroll
    for (int j = 0; j < NB; j++) {
        const int v = vb + lane + 32 * j;
        if (v < nvec) buf[j] = ld_stream(wr + v);
    }
}

template <class AT, int NB>
static __device__ __forceinline__ float gv_dot(const uint4 (&buf)[NB], const AT *xs, int vb, int nvec, float acc) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int j = 0; j < NB; j++) {
        const int v = vb + lane + 32 * j;
        if (v < nvec) acc = dot8(buf[j], xs + (int64_t)v * 8, acc);
    }
    return acc;
}

/* a batch into shared memory (cp.async, no registers): slot[j·32 + lane] = vector vb + lane + 32·j of the row */
template <int NB>
static __device__ __forceinline__ void gv_load_s(uint4 *slot, const bf16 *W, int64_t row, int K, int vb, int nvec) {
    const int lane = threadIdx.x & 31;
    const uint4 *wr = (const uint4 *)(W + row * (int64_t)K);
#pragma unroll
    for (int j = 0; j < NB; j++) {
        const int v = vb + lane + 32 * j;
        if (v < nvec) cp_async16(slot + 32 * j + lane, wr + v, true);
    }
}

template <class AT, int NB>
static __device__ __forceinline__ float gv_dot_s(const uint4 *slot, const AT *xs, int vb, int nvec, float acc) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int j = 0; j < NB; j++) {
        const int v = vb + lane + 32 * j;
        if (v < nvec) acc = dot8(slot[32 * j + lane], xs + (int64_t)v * 8, acc);
    }
    return acc;
}

/* xs[K] = the operand a (see cu_gemv_op). x, w and z are read PT elements a thread at a time (one round of
 * loads when K ≤ 256·PT); the sum of squares runs over each thread's elements in index order, then across the
 * block (block_sum_d), so every variant and chunking rounds the same inverse norm. */
template <class AT, int IN, int PT>
static __device__ __forceinline__ void gv_stage(AT *xs, const cu_gemv_op &op, int K) {
    const int tid = threadIdx.x;
    if (IN == CU_GV_PLAIN) {
        constexpr int U = PT / 2;
        const uint4 *src = (const uint4 *)op.x;
        uint4 *dst = (uint4 *)xs;
        const int nv = K * (int)sizeof(AT) / 16;
        for (int i0 = 0; i0 < nv; i0 += 256 * U) {
            uint4 t[U];
#pragma unroll
            for (int j = 0; j < U; j++) {
                const int i = i0 + tid + 256 * j;
                if (i < nv) t[j] = __ldcg(src + i);
            }
#pragma unroll
            for (int j = 0; j < U; j++) {
                const int i = i0 + tid + 256 * j;
                if (i < nv) dst[i] = t[j];
            }
        }
        return;
    }
    const float *x = (const float *)op.x;
    const bool hw = IN == CU_GV_NORM || op.w != NULL, hz = IN == CU_GV_GATE && op.z != NULL;
    const bool one = K <= 256 * PT;
    float xv[PT], wv[PT], zv[PT];
    float inv = 1.0f;
    if (one) { /* x, w and z in one round of loads */
#pragma unroll
        for (int j = 0; j < PT; j++) {
            const int i = tid + 256 * j;
            const bool ok = i < K;
            xv[j] = ok ? __ldcg(x + i) : 0.f;
            wv[j] = ok && hw ? __ldg(op.w + i) : 0.f;
            zv[j] = ok && hz ? __ldcg(op.z + i) : 0.f;
        }
    }
    if (hw) {
        double ss = 0;
        if (one) {
#pragma unroll
            for (int j = 0; j < PT; j++) ss += (double)xv[j] * xv[j];
        } else {
            for (int c0 = 0; c0 < K; c0 += 256 * PT) {
                float t[PT];
#pragma unroll
                for (int j = 0; j < PT; j++) {
                    const int i = c0 + tid + 256 * j;
                    t[j] = i < K ? __ldcg(x + i) : 0.f;
                }
#pragma unroll
                for (int j = 0; j < PT; j++) ss += (double)t[j] * t[j];
            }
        }
        ss = block_sum_d(ss);
        inv = (float)(1.0 / sqrt(ss / K + op.eps));
    }
    for (int c0 = 0; c0 < K; c0 += 256 * PT) {
        if (!one) {
#pragma unroll
            for (int j = 0; j < PT; j++) {
                const int i = c0 + tid + 256 * j;
                const bool ok = i < K;
                xv[j] = ok ? __ldcg(x + i) : 0.f;
                wv[j] = ok && hw ? __ldg(op.w + i) : 0.f;
                zv[j] = ok && hz ? __ldcg(op.z + i) : 0.f;
            }
        }
#pragma unroll
        for (int j = 0; j < PT; j++) {
            const int i = c0 + tid + 256 * j;
            if (i >= K) break;
            float v = xv[j];
            if (IN == CU_GV_NORM) {
                v = v * inv * wv[j];
                if (op.div != 1.0f) v /= op.div;
            } else {
                if (hw) v = v * inv * wv[j];
                if (hz) v *= 1.0f / (1.0f + expf(-zv[j]));
            }
            xs[i] = from_f32<AT>(v);
        }
    }
}

template <class AT, int OUT>
static __device__ __forceinline__ void gv_out(const cu_gemv_op &op, int64_t it, float s0, float sum) {
    if (OUT == CU_GV_SWIGLU) {
        ((AT *)op.y)[it] = from_f32<AT>(s0 / (1.0f + expf(-s0)) * sum);
    } else {
        float *py = (float *)op.y + it;
        *py = op.beta == 0.f ? op.alpha * sum : op.alpha * sum + op.beta * __ldcg(py);
    }
}

/* cu_gemv_prof (tests/test_cuda_decbench.c, SALA_DECBENCH_TIMELINE): global-timer stamps (ns) of each block of
 * each launch, GV_PROF_W values a block:
 * entry, pdl_wait() returned, operand built, then each warp's end (3 + warp), the SM at 15 */
#define GV_PROF_BLOCKS 1024
#define GV_PROF_W 16
static __device__ __forceinline__ void gv_stamp(unsigned long long *rec, int i) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    rec[i] = t;
}

template <class AT, int IN, int OUT, int NB, bool DB, int MINB>
__global__ void __launch_bounds__(256, MINB) k_gemv1(cu_gemv_op op, const bf16 *W, int K, int items, int trig,
                                                     int pf, unsigned long long *prof, int stage) {
    extern __shared__ uint4 gv_smem[];
    AT *xs = (AT *)gv_smem; /* [K] the operand a */
    constexpr int R = OUT == CU_GV_SWIGLU ? 2 : 1, PT = MINB >= 4 ? 4 : 16;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t gw = (int64_t)blockIdx.x * 8 + warp, nw = (int64_t)gridDim.x * 8;
    const int it1 = (int)((gw + 1) * items / nw), it0 = (int)(gw * items / nw);
    const int nvec = K / 8;
    uint4 bA[NB], bB[NB];
    unsigned long long *rec = prof ? prof + (size_t)blockIdx.x * GV_PROF_W : NULL;
    if (rec && threadIdx.x == 0) {
        unsigned sm;
        asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
        gv_stamp(rec, 0), rec[15] = sm;
    }
    gv_pos lp = {it0, 0, 0}; /* next batch to load */
    /* weights only before pdl_wait(): nothing an earlier kernel writes */
    if (lp.it < it1) {
        gv_load<NB>(bA, W, lp.it + (int64_t)lp.r * items, K, lp.vb, nvec);
        gv_next<NB, R>(lp, nvec);
    }
    if (DB && lp.it < it1) {
        gv_load<NB>(bB, W, lp.it + (int64_t)lp.r * items, K, lp.vb, nvec);
        gv_next<NB, R>(lp, nvec);
    }
    /* the batches after those into shared memory: `stage` more per warp in flight across the wait and the
     * operand's build (summed after the register batches, once) */
    uint4 *ws = gv_smem + ((size_t)K * sizeof(AT) + 15) / 16 + (size_t)warp * stage * 32 * NB;
    int ns = 0;
    for (; ns < stage && lp.it < it1; ns++) {
        gv_load_s<NB>(ws + (size_t)ns * 32 * NB, W, lp.it + (int64_t)lp.r * items, K, lp.vb, nvec);
        gv_next<NB, R>(lp, nvec);
    }
    if (ns) cp_async_commit();
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (pf > 0 && lane == 0 && it0 < it1) { /* the start of the warp's rows into L2 (bulk prefetch, no registers) */
        for (int r = 0; r < R; r++) {
            const int64_t bytes = (int64_t)(it1 - it0) * K * 2;
            const unsigned n = (unsigned)((bytes < pf ? bytes : pf) & ~(int64_t)15);
            const bf16 *src = W + ((int64_t)it0 + (int64_t)r * items) * K;
            if (n) asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(src), "r"(n) : "memory");
        }
    }
#endif
    pdl_wait();
    if (rec && threadIdx.x == 0) gv_stamp(rec, 1);
    gv_stage<AT, IN, PT>(xs, op, K);
    __syncthreads();
    if (rec && threadIdx.x == 0) gv_stamp(rec, 2);
    if (trig == 1) pdl_trigger();
    float acc = 0.f, s0 = 0.f;
    gv_pos cp = {it0, 0, 0}; /* batch being summed */
    /* after a batch is summed: the row's output if the batch ended it, then the next batch to sum */
    auto close = [&]() {
        if (cp.vb + 32 * NB >= nvec) {
            const float sum = warp_sum(acc);
            acc = 0.f;
            if (R == 2 && cp.r == 0) s0 = sum;
            else if (lane == 0) gv_out<AT, OUT>(op, cp.it, s0, sum);
        }
        gv_next<NB, R>(cp, nvec);
    };
    /* sum the batch in buf, refill buf with the next one to load, then close the row if it ended */
    auto step = [&](uint4 (&buf)[NB]) {
        acc = gv_dot<AT, NB>(buf, xs, cp.vb, nvec, acc);
        if (lp.it < it1) {
            gv_load<NB>(buf, W, lp.it + (int64_t)lp.r * items, K, lp.vb, nvec);
            gv_next<NB, R>(lp, nvec);
        } else if (trig == 2) {
            pdl_trigger();
        }
        close();
    };
    if (ns) { /* the register batches, then the staged ones, then on as usual */
        step(bA);
        if (DB && cp.it < it1) step(bB);
        cp_async_wait<0>();
        for (int s = 0; s < ns; s++) {
            acc = gv_dot_s<AT, NB>(ws + (size_t)s * 32 * NB, xs, cp.vb, nvec, acc);
            close();
        }
    }
    while (cp.it < it1) {
        step(bA);
        if (DB && cp.it < it1) step(bB);
    }
    if (rec && lane == 0) gv_stamp(rec, 3 + warp);
}

#define GV_MAX_SMEM (160 << 10)

static int pdl_state = -1;

extern "C" void cu_pdl_set(int on) {
    pdl_state = -1;
    const int mask = cu_pdl_on() ? PDL_ALL : 0;
    pdl_state = on > 0 ? (on & mask) : 0;
}

extern "C" int cu_pdl_on(void) {
    int &on = pdl_state;
    if (on < 0) {
        int dev = 0, major = 0;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
        const char *e = getenv("SALA_CUDA_PDL");
        on = major >= 9 ? (e && *e ? (atoi(e) & PDL_ALL) : PDL_ALL) : 0;
    }
    return on;
}

/* the variant, trigger and blocks per SM in use (cu_gemv_config; SALA_GV_VAR, SALA_GV_TRIG, SALA_GV_BPS) */
static int gv_var = 2, gv_trig = 1, gv_bps = 0, gv_pf = 0; /* gv_bps 0: automatic (cu_gemv) */
/* Weights staged in shared memory before the wait (cp.async), on top of the two register batches: batches per
 * warp for a GEMV whose blocks run in one wave, by operand kind (plain, norm, gate with its norm, gate alone),
 * and for one in two waves. Staging deepens what is in flight across the wait and the operand's build, but
 * its shared memory comes out of the SM's L1, where the register loads in flight land, so more is not better.
 * Measured on the H100 with a weight copy per layer (docs/PERF.md round 8): one batch for the Lightning layers'
 * o_proj (gate with norm) takes the synthetic step at 8K from 7.058 to 7.002 ms and leaves 1M as it was
 * (7.174 / 7.175); the other kinds gained nothing at 1M. SALA_GV_STAGE (four digits, or one for all) and
 * SALA_GV_STAGE2 override these. */
#define GV_STAGE_DEF {0, 0, 1, 0}
static const int gv_stage_def[4] = GV_STAGE_DEF;
static int gv_stage_k[4] = GV_STAGE_DEF, gv_stage_n2 = 0;
static int gv_smem_max = 0, gv_smem_sm = 0; /* shared memory a block may opt in to, and an SM's (cu_gemv_prepare) */

extern "C" void cu_gemv_config(int var, int trig, int bps, int pf) {
    if (var >= 0 && var <= 2) gv_var = var;
    if (trig >= 0 && trig <= 2) gv_trig = trig;
    if (bps >= 0 && bps <= 8) gv_bps = bps;
    if (pf >= 0) gv_pf = pf;
}

extern "C" void cu_gemv_stage(const int k[4], int n2) {
    for (int i = 0; i < 4; i++) gv_stage_k[i] = k ? (k[i] >= 0 && k[i] <= 8 ? k[i] : 0) : gv_stage_def[i];
    gv_stage_n2 = n2 >= 0 && n2 <= 8 ? n2 : 0;
}

#define GV_VARIANT_CASES(AT, IN, OUT)                                                 \
    case 0: K_ = k_gemv1<AT, IN, OUT, 8, false, 4>; break;                            \
    case 1: K_ = k_gemv1<AT, IN, OUT, 16, false, 2>; break;                           \
    default: K_ = k_gemv1<AT, IN, OUT, 8, true, 2>; break;

typedef void (*gv_kernel)(cu_gemv_op, const bf16 *, int, int, int, int, unsigned long long *, int);

/* the stamps' buffer (cu_gemv_prof): a slot of GV_PROF_BLOCKS blocks for each of gp_cap launches, and what
 * each launch was (N, K, in, out, blocks) */
static unsigned long long *gp_buf;
static int gp_cap, gp_n;
static int (*gp_meta)[5];

extern "C" int cu_gemv_prof(int nmax) {
    if (gp_buf) cudaFree(gp_buf);
    free(gp_meta);
    gp_buf = NULL, gp_meta = NULL, gp_cap = gp_n = 0;
    if (nmax <= 0) return 0;
    const size_t bytes = (size_t)nmax * GV_PROF_BLOCKS * GV_PROF_W * sizeof(unsigned long long);
    gp_meta = (int (*)[5])calloc((size_t)nmax, sizeof *gp_meta);
    if (!gp_meta || cudaMalloc(&gp_buf, bytes) != cudaSuccess) {
        free(gp_meta), gp_meta = NULL, gp_buf = NULL;
        return (int)cudaErrorMemoryAllocation;
    }
    gp_cap = nmax;
    return (int)cudaMemset(gp_buf, 0, bytes);
}

extern "C" int cu_gemv_prof_read(unsigned long long *h, int (*meta)[5], int nmax) {
    const int n = gp_n < nmax ? gp_n : nmax;
    if (n <= 0) return 0;
    memcpy(meta, gp_meta, (size_t)n * sizeof *gp_meta);
    if (cudaMemcpy(h, gp_buf, (size_t)n * GV_PROF_BLOCKS * GV_PROF_W * sizeof(unsigned long long),
                   cudaMemcpyDeviceToHost) != cudaSuccess)
        return -1;
    return n;
}

template <class AT, int IN, int OUT> static gv_kernel gv_pick(int var) {
    gv_kernel K_;
    switch (var) { GV_VARIANT_CASES(AT, IN, OUT) }
    return K_;
}

template <class AT> static gv_kernel gv_pick_io(int in, int out, int var) {
    if (out == CU_GV_SWIGLU) {
        if (in == CU_GV_PLAIN) return gv_pick<AT, CU_GV_PLAIN, CU_GV_SWIGLU>(var);
        if (in == CU_GV_NORM) return gv_pick<AT, CU_GV_NORM, CU_GV_SWIGLU>(var);
        return gv_pick<AT, CU_GV_GATE, CU_GV_SWIGLU>(var);
    }
    if (in == CU_GV_PLAIN) return gv_pick<AT, CU_GV_PLAIN, CU_GV_STORE>(var);
    if (in == CU_GV_NORM) return gv_pick<AT, CU_GV_NORM, CU_GV_STORE>(var);
    return gv_pick<AT, CU_GV_GATE, CU_GV_STORE>(var);
}

/* everything cu_gemv queries or sets once, done outside any graph capture */
extern "C" int cu_gemv_prepare(void) {
    static int done = 0;
    if (!done) {
        cu_pdl_on();
        cu_sm_count(); /* asked (and cached) before any graph capture */
        const char *e;
        if ((e = getenv("SALA_GV_VAR"))) gv_var = atoi(e) >= 0 && atoi(e) <= 2 ? atoi(e) : gv_var;
        if ((e = getenv("SALA_GV_TRIG"))) gv_trig = atoi(e) >= 0 && atoi(e) <= 2 ? atoi(e) : gv_trig;
        if ((e = getenv("SALA_GV_BPS"))) gv_bps = atoi(e) >= 0 && atoi(e) <= 8 ? atoi(e) : gv_bps;
        if ((e = getenv("SALA_GV_PF"))) gv_pf = atoi(e) >= 0 ? atoi(e) : gv_pf;
        if ((e = getenv("SALA_GV_STAGE")))
            for (int i = 0; i < 4; i++) {
                const char c = e[strlen(e) == 4 ? i : 0];
                if (c >= '0' && c <= '8') gv_stage_k[i] = c - '0';
            }
        if ((e = getenv("SALA_GV_STAGE2"))) gv_stage_n2 = atoi(e) >= 0 && atoi(e) <= 8 ? atoi(e) : gv_stage_n2;
        int dev = 0;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&gv_smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
        cudaDeviceGetAttribute(&gv_smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev);
        gv_smem_max -= 1024; /* the static shared memory (block_sum_d) */
        if (gv_smem_max < GV_MAX_SMEM) gv_smem_max = GV_MAX_SMEM;
        for (int var = 0; var < 3; var++)
            for (int in = 0; in < 3; in++)
                for (int out = 0; out < 2; out++) {
                    cudaFuncSetAttribute(gv_pick_io<bf16>(in, out, var), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         gv_smem_max);
                    cudaFuncSetAttribute(gv_pick_io<float>(in, out, var), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         gv_smem_max);
                }
        done = 1;
    }
    return LAUNCH_CHECK();
}

extern "C" int cu_gemv_supported(cu_dtype at, int64_t K) {
    return K > 0 && K % 8 == 0 && K * (at == CU_BF16 ? 2 : 4) <= GV_MAX_SMEM;
}

extern "C" int cu_gemv(void *stream, const cu_gemv_op *op, cu_dtype at, const uint16_t *W, int64_t N, int64_t K) {
    if (N <= 0) return 0;
    if (!cu_gemv_supported(at, K) || align_of(W) < 16 || (op->in == CU_GV_PLAIN && align_of(op->x) < 16) ||
        (op->out == CU_GV_SWIGLU && N % 2) || (op->in == CU_GV_NORM && !op->w) || op->in < 0 || op->in > 2 ||
        op->out < 0 || op->out > 1)
        return (int)cudaErrorInvalidValue;
    cudaStream_t st = (cudaStream_t)stream;
    size_t smem = (size_t)K * (at == CU_BF16 ? 2 : 4);
    const int64_t items = op->out == CU_GV_SWIGLU ? N / 2 : N;
    int bps = gv_bps;
    if (bps == 0) { /* 2 blocks per SM (all resident at once); a long GEMV (≥ 4 items a warp at that) in two waves
                     * of blocks instead: the 9B shape's w_in and gate|up measured 3 % faster that way, o_proj
                     * and down (2 items a warp) slower (H100, docs/PERF.md round 6) */
        const int64_t w2 = (int64_t)cu_sm_count() * 2 * 8;
        bps = (items + w2 - 1) / w2 >= 4 ? 4 : 2;
    }
    int stage = bps > 2 ? gv_stage_n2 : gv_stage_k[op->in == CU_GV_GATE && !op->w ? 3 : op->in];
    if (stage || smem > (48 << 10)) cu_gemv_prepare(); /* the attributes, and the shared memory sizes staging needs */
    if (stage) { /* 8 warps × stage × 32 lanes × NB vectors of 16 bytes, while two blocks still fit an SM */
        const size_t per = (size_t)8 * 32 * (gv_var == 1 ? 16 : 8) * 16;
        size_t lim = (size_t)gv_smem_sm / 2 - 1024;
        if (lim > (size_t)gv_smem_max) lim = (size_t)gv_smem_max;
        while (stage > 0 && smem + stage * per > lim) stage--;
        smem += stage * per;
    }
    const int64_t wmax = (int64_t)cu_sm_count() * bps * 8;
    const int64_t rounds = (items + wmax - 1) / wmax, warps = (items + rounds - 1) / rounds;
    const unsigned blocks = (unsigned)((warps + 7) / 8);
    gv_kernel kern = at == CU_BF16 ? gv_pick_io<bf16>(op->in, op->out, gv_var) : gv_pick_io<float>(op->in, op->out, gv_var);
    unsigned long long *prof = NULL;
    if (gp_buf && gp_n < gp_cap && blocks <= GV_PROF_BLOCKS) {
        prof = gp_buf + (size_t)gp_n * GV_PROF_BLOCKS * GV_PROF_W;
        int *mt = gp_meta[gp_n++];
        mt[0] = (int)N, mt[1] = (int)K, mt[2] = op->in, mt[3] = op->out, mt[4] = (int)blocks;
    }
    int e = pdl_launch(PDL_GEMV, kern, dim3(blocks), dim3(256), smem, st, *op, (const bf16 *)W, (int)K, (int)items, gv_trig,
                       gv_pf, prof, stage);
    return e ? e : LAUNCH_CHECK();
}

template <class XT>
static int gemv_t(cudaStream_t st, float *y, int64_t ldy, const XT *x, int64_t ldx, const bf16 *W, int64_t T, int64_t N,
                  int64_t K, float alpha, float beta) {
    int64_t blocks = (N + 15) / 16; /* 8 warps × 2 rows */
    if (blocks > 8192) blocks = 8192;
    switch (T) {
    case 1: k_gemv<XT, 1><<<(unsigned)blocks, 256, 0, st>>>(y, ldy, x, ldx, W, N, K, alpha, beta); break;
    case 2: k_gemv<XT, 2><<<(unsigned)blocks, 256, 0, st>>>(y, ldy, x, ldx, W, N, K, alpha, beta); break;
    case 3: k_gemv<XT, 3><<<(unsigned)blocks, 256, 0, st>>>(y, ldy, x, ldx, W, N, K, alpha, beta); break;
    default: k_gemv<XT, 4><<<(unsigned)blocks, 256, 0, st>>>(y, ldy, x, ldx, W, N, K, alpha, beta); break;
    }
    return LAUNCH_CHECK();
}

extern "C" int cu_gemv_rows(void *stream, float *y, int64_t ldy, const void *x, cu_dtype xt, int64_t ldx,
                            const uint16_t *W, int64_t T, int64_t N, int64_t K, float alpha, float beta) {
    cudaStream_t st = (cudaStream_t)stream;
    if (xt == CU_BF16) return gemv_t(st, y, ldy, (const bf16 *)x, ldx, (const bf16 *)W, T, N, K, alpha, beta);
    return gemv_t(st, y, ldy, (const float *)x, ldx, (const bf16 *)W, T, N, K, alpha, beta);
}
