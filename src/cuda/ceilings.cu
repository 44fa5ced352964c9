/* ceilings.cu — the card's limits, measured: what every performance figure of this project is a fraction of.
 *
 *   bf16 GEMM   cuBLAS, M = N = K = 8192, bf16 operands, fp32 accumulation and output: TFLOP/s of the tensor
 *               cores as the library reaches them (the weight GEMMs of a prefill run on the same library);
 *               "burst" = the fastest of 10 runs, "sustained" = the mean over 1 s of back-to-back runs after
 *               2 s of them (a long prefill runs at the clock the card holds under that load)
 *   HBM read    one kernel streaming a 4 GiB buffer with 16-byte loads (the decode GEMVs' access pattern)
 *   HBM copy    cudaMemcpyAsync device to device of 2 GiB, counted as bytes read + bytes written
 *   L2 read     every SM reading a buffer of half the L2 size again and again (loads cached in L2 only)
 *   MUFU ex2    ex2.approx.f32 at full occupancy, 16 independent chains a thread (the exps of InfLLM-v2's
 *               stage 1 and of softmax run on this unit)
 * Each figure but the sustained GEMM is the best of several timed repetitions after a warm-up. Each kernel's
 * result is checked (the read sums against the known fill, a few GEMM outputs against the CPU, the exp chains
 * against their fixed point), so a figure never comes from work the compiler or the card skipped. */
#include <cublas_v2.h>

#include "cuda/common.cuh"
#include "cuda/cuda_extra.h"

/* deterministic operand values in {−1, 0, 1}: exact in bf16, so the GEMM's fp32 outputs are exact integers */
static __host__ __device__ __forceinline__ int ce_val(uint64_t i, uint32_t salt) {
    uint32_t h = (uint32_t)(i * 2654435761ull) ^ salt;
    h ^= h >> 15, h *= 0x2c1b3c6du, h ^= h >> 12;
    return (int)(h % 3u) - 1;
}

__global__ void k_ce_fill(bf16 *p, int64_t n, uint32_t salt) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        p[i] = __float2bfloat16_rn((float)ce_val((uint64_t)i, salt));
}

/* sum of the 32-bit words of p[0, n16) (16-byte vectors), reps times over; per block into out[block] */
template <bool L2ONLY>
__global__ void __launch_bounds__(512) k_ce_read(const uint4 *p, int64_t n16, int reps, uint32_t *out) {
    uint32_t s = 0;
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int r = 0; r < reps; r++) {
        int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
        for (; i + 3 * stride < n16; i += 4 * stride) { /* four loads in flight */
            uint4 v[4];
#pragma unroll
            for (int j = 0; j < 4; j++) v[j] = L2ONLY ? __ldcg(p + i + j * stride) : __ldcs(p + i + j * stride);
#pragma unroll
            for (int j = 0; j < 4; j++) s += v[j].x + v[j].y + v[j].z + v[j].w;
        }
        for (; i < n16; i += stride) {
            const uint4 v = L2ONLY ? __ldcg(p + i) : __ldcs(p + i);
            s += v.x + v.y + v.z + v.w;
        }
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    __shared__ uint32_t ws[16];
    if ((threadIdx.x & 31) == 0) ws[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        uint32_t t = 0;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++) t += ws[w];
        out[blockIdx.x] = t;
    }
}

#define CE_CHAINS 16
static __device__ __forceinline__ float ce_ex2(float x) {
    float y;
    asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
/* x ← −0.5 · 2^x, iters times on 16 chains (it converges, so nothing overflows); the chains' sum per thread */
__global__ void __launch_bounds__(256) k_ce_exp(float *out, int iters) {
    float x[CE_CHAINS];
#pragma unroll
    for (int c = 0; c < CE_CHAINS; c++) x[c] = -0.03125f * c;
    for (int i = 0; i < iters; i++)
#pragma unroll
        for (int c = 0; c < CE_CHAINS; c++) x[c] = -0.5f * ce_ex2(x[c]);
    float s = 0.f;
#pragma unroll
    for (int c = 0; c < CE_CHAINS; c++) s += x[c];
    out[blockIdx.x * (int64_t)blockDim.x + threadIdx.x] = s;
}

/* milliseconds of the fastest of reps runs of f (after one warm-up run); −1 on a CUDA error */
template <class F> static float ce_best_ms(cudaStream_t st, int reps, F f) {
    cudaEvent_t a, b;
    if (cudaEventCreate(&a) != cudaSuccess) return -1.f;
    if (cudaEventCreate(&b) != cudaSuccess) return cudaEventDestroy(a), -1.f;
    float best = -1.f;
    bool ok = f() == 0;
    for (int r = 0; ok && r < reps; r++) {
        float ms = 0.f;
        ok = cudaEventRecord(a, st) == cudaSuccess && f() == 0 && cudaEventRecord(b, st) == cudaSuccess &&
             cudaEventSynchronize(b) == cudaSuccess && cudaEventElapsedTime(&ms, a, b) == cudaSuccess;
        if (ok && (best < 0.f || ms < best)) best = ms;
    }
    cudaEventDestroy(a), cudaEventDestroy(b);
    return ok ? best : -1.f;
}

/* sum of the 32-bit words of a buffer filled by memset with byte b, n16 16-byte vectors, reps times */
static uint32_t ce_expect_sum(int b, int64_t n16, int reps) {
    const uint32_t w = 0x01010101u * (uint32_t)b;
    return (uint32_t)((uint64_t)w * (uint64_t)(4 * n16) * (uint64_t)reps);
}

static int ce_check_sum(const uint32_t *d_out, int nblk, uint32_t want, const char *what) {
    uint32_t *h = (uint32_t *)malloc(sizeof(uint32_t) * (size_t)nblk);
    if (!h) return (int)cudaErrorMemoryAllocation;
    int e = (int)cudaMemcpy(h, d_out, sizeof(uint32_t) * (size_t)nblk, cudaMemcpyDeviceToHost);
    uint32_t s = 0;
    for (int i = 0; i < nblk; i++) s += h[i];
    free(h);
    if (!e && s != want) {
        fprintf(stderr, "sala: ceilings: the %s kernel summed 0x%08x, expected 0x%08x\n", what, s, want);
        return (int)cudaErrorUnknown;
    }
    return e;
}

extern "C" int cu_measure_ceilings(cu_ceilings *c) {
    memset(c, 0, sizeof *c);
    int dev = 0, nsm = 0, l2 = 0;
    int e = (int)cudaGetDevice(&dev);
    if (!e) e = (int)cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, dev);
    if (!e) e = (int)cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev);
    if (e) return e;
    c->l2_bytes = l2;
    cudaStream_t st;
    if ((e = (int)cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking))) return e;
    const int64_t big = (int64_t)4 << 30;
    char *buf = NULL;
    uint32_t *sums = NULL;
    float *exps = NULL;
    const int nblk = nsm * 4, ethreads = nsm * 8 * 256;
    if (!e) e = (int)cudaMalloc((void **)&buf, (size_t)big);
    if (!e) e = (int)cudaMalloc((void **)&sums, sizeof(uint32_t) * (size_t)nblk);
    if (!e) e = (int)cudaMalloc((void **)&exps, sizeof(float) * (size_t)ethreads);
    /* HBM read: 4 GiB of 0x5a bytes */
    if (!e) e = (int)cudaMemsetAsync(buf, 0x5a, (size_t)big, st);
    if (!e) {
        const int64_t n16 = big / 16;
        float ms = ce_best_ms(st, 5, [&] {
            k_ce_read<false><<<nblk, 512, 0, st>>>((const uint4 *)buf, n16, 1, sums);
            return LAUNCH_CHECK();
        });
        if (ms <= 0.f) e = (int)cudaErrorUnknown;
        else c->hbm_read_tbs = big / (ms * 1e-3) / 1e12, e = ce_check_sum(sums, nblk, ce_expect_sum(0x5a, n16, 1), "HBM read");
    }
    /* HBM copy: the first 2 GiB onto the second */
    if (!e) {
        const size_t half = (size_t)big / 2;
        float ms = ce_best_ms(st, 5, [&] { return (int)cudaMemcpyAsync(buf + half, buf, half, cudaMemcpyDeviceToDevice, st); });
        if (ms <= 0.f) e = (int)cudaErrorUnknown;
        else c->hbm_copy_tbs = 2.0 * half / (ms * 1e-3) / 1e12;
    }
    /* L2 read: half the L2, 64 passes in one launch */
    if (!e) {
        const int64_t bytes = (int64_t)(l2 / 2) & ~(int64_t)4095, n16 = bytes / 16;
        const int reps = 64;
        c->l2_buffer_bytes = bytes;
        if ((e = (int)cudaMemsetAsync(buf, 0x33, (size_t)bytes, st)) == 0) {
            float ms = ce_best_ms(st, 5, [&] {
                k_ce_read<true><<<nblk, 512, 0, st>>>((const uint4 *)buf, n16, reps, sums);
                return LAUNCH_CHECK();
            });
            if (ms <= 0.f) e = (int)cudaErrorUnknown;
            else
                c->l2_read_tbs = (double)bytes * reps / (ms * 1e-3) / 1e12,
                e = ce_check_sum(sums, nblk, ce_expect_sum(0x33, n16, reps), "L2 read");
        }
    }
    /* MUFU ex2 */
    if (!e) {
        const int iters = 4096;
        float ms = ce_best_ms(st, 5, [&] {
            k_ce_exp<<<ethreads / 256, 256, 0, st>>>(exps, iters);
            return LAUNCH_CHECK();
        });
        if (ms <= 0.f) e = (int)cudaErrorUnknown;
        else {
            c->ex2_per_s = (double)ethreads * CE_CHAINS * iters / (ms * 1e-3);
            /* every chain reaches the fixed point x = −0.5 · 2^x (≈ −0.3835) long before iters steps */
            float h[2] = {0.f, 0.f};
            e = (int)cudaMemcpy(h, exps + ethreads - 2, sizeof h, cudaMemcpyDeviceToHost);
            double xf = -0.5;
            for (int i = 0; i < 200; i++) xf = -0.5 * exp2(xf);
            for (int i = 0; !e && i < 2; i++)
                if (fabs(h[i] - CE_CHAINS * xf) > 1e-3 * CE_CHAINS) {
                    fprintf(stderr, "sala: ceilings: the ex2 chains ended at %g, expected %g\n", h[i], CE_CHAINS * xf);
                    e = (int)cudaErrorUnknown;
                }
        }
    }
    /* bf16 GEMM through cuBLAS: C[M][N] (column-major, fp32) = Aᵀ B over K, A and B K-major */
    if (!e) {
        const int n = 8192;
        const size_t ab = (size_t)n * n * sizeof(bf16);
        bf16 *A = (bf16 *)buf, *B = (bf16 *)(buf + ab);
        float *C = (float *)(buf + 2 * ab); /* 3 · 128 MiB + 256 MiB fit in the 4 GiB */
        k_ce_fill<<<nsm * 8, 256, 0, st>>>(A, (int64_t)n * n, 0x1234u);
        k_ce_fill<<<nsm * 8, 256, 0, st>>>(B, (int64_t)n * n, 0xbeefu);
        e = LAUNCH_CHECK();
        cublasHandle_t h = NULL;
        if (!e && cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) e = (int)cudaErrorUnknown, h = NULL;
        if (!e && cublasSetStream(h, st) != CUBLAS_STATUS_SUCCESS) e = (int)cudaErrorUnknown;
        if (!e) {
            const float one = 1.f, zero = 0.f;
            float ms = ce_best_ms(st, 10, [&] {
                return cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, A, CUDA_R_16BF, n, B, CUDA_R_16BF, n,
                                    &zero, C, CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS
                           ? 0
                           : (int)cudaErrorUnknown;
            });
            if (ms <= 0.f) e = (int)cudaErrorUnknown;
            else c->gemm_tflops = 2.0 * n * (double)n * n / (ms * 1e-3) / 1e12;
            /* sustained: 2 s of GEMMs, then the mean of the next ≈ 1 s */
            const int batch = (int)(1000.f / ms) + 1;
            cudaEvent_t a = NULL, b = NULL;
            if (!e && (e = (int)cudaEventCreate(&a)) == 0 && (e = (int)cudaEventCreate(&b)) == 0) {
                for (int r = 0; !e && r < 3 * batch; r++) {
                    if (r == 2 * batch) e = (int)cudaEventRecord(a, st);
                    if (!e && cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, A, CUDA_R_16BF, n, B, CUDA_R_16BF, n,
                                           &zero, C, CUDA_R_32F, n, CUBLAS_COMPUTE_32F,
                                           CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS)
                        e = (int)cudaErrorUnknown;
                    if (!e && r % 64 == 63) e = (int)cudaStreamSynchronize(st); /* keep the launch queue short */
                }
                float tot = 0.f;
                if (!e) e = (int)cudaEventRecord(b, st);
                if (!e) e = (int)cudaEventSynchronize(b);
                if (!e) e = (int)cudaEventElapsedTime(&tot, a, b);
                if (!e) c->gemm_sustained_tflops = 2.0 * n * (double)n * n * batch / (tot * 1e-3) / 1e12;
            }
            if (a) cudaEventDestroy(a);
            if (b) cudaEventDestroy(b);
            /* C[i][j] = Σ_k A[i][k] B[j][k], integers: a few of them against the CPU */
            for (int s = 0; !e && s < 4; s++) {
                const int64_t i = (s * 2731 + 17) % n, j = (s * 5113 + 901) % n;
                float got = 0.f;
                e = (int)cudaMemcpy(&got, C + j * n + i, sizeof got, cudaMemcpyDeviceToHost);
                long want = 0;
                for (int64_t k = 0; k < n; k++) want += ce_val((uint64_t)(i * n + k), 0x1234u) * ce_val((uint64_t)(j * n + k), 0xbeefu);
                if (!e && got != (float)want) {
                    fprintf(stderr, "sala: ceilings: GEMM C[%lld][%lld] = %g, expected %ld\n", (long long)i, (long long)j,
                            got, want);
                    e = (int)cudaErrorUnknown;
                }
            }
        }
        if (h) cublasDestroy(h);
    }
    cudaStreamSynchronize(st);
    cudaFree(buf), cudaFree(sums), cudaFree(exps);
    cudaStreamDestroy(st);
    if (e) cudaGetLastError();
    return e;
}
