/* gemm.cu — y = alpha · x Wᵀ + beta · y through cuBLASLt, fp32 accumulation.
 *
 * The weights stay bf16 on the GPU (uploaded once). Two operand paths:
 *   bf16 x:  one cuBLASLt matmul, A = W (bf16), B = x (bf16), C = D = y (fp32, or bf16 when the product
 *            only feeds elementwise ops: half the bytes written and read again), compute 32F: tensor cores.
 *   fp32 x:  the exact mode. cuBLASLt has no fp32 × bf16 kernel, so W is widened to fp32 one slice of
 *            rows at a time in a scratch buffer and multiplied with compute 32F on fp32 operands (the
 *            SGEMM path; TF32 would round the operands to 10 bits and is not used).
 * Row-major y[T, N] = x[T, K] · W[N, K]ᵀ is, in cuBLAS's column-major terms, Y(N×T) = Wᵀ(N×K) · X(K×T):
 * A = W viewed as K×N with ld K and transposed, B = x viewed as K×T with ld ldx, C/D = y as N×T, ld ldy.
 *
 * Choosing an algorithm (the heuristic) costs tens of microseconds, so plans are cached per shape,
 * stride, pointer alignment and output dtype: a decode step reuses them. When cuBLASLt offers no
 * algorithm for a shape (odd strides), a plain tiled kernel computes the same product.
 * cu_gemm_tune builds the plan of a prefill shape by timing cuBLASLt's first GEMM_TUNE_ALGOS candidates
 * on the real operands (the heuristic's first pick is not always the fastest); a session tunes its chunk's
 * shapes once when it is created. Every candidate computes the same product (fp32 accumulation; split-K
 * candidates may sum in another order), so the choice changes speed, not the math beyond rounding order.
 *
 * Decode rows (T ≤ 4) go to the GEMVs of gemv.cu. */
#include <cublasLt.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/common.cuh"

#define GEMM_PLANS 96
#define GEMM_WORKSPACE (32u << 20)
#define GEMM_TUNE_ALGOS 8

typedef struct {
    int used, ok, xt, yt;
    int tuned;             /* the algorithm was chosen by timing (cu_gemm_tune) */
    int64_t m, n, k, lda, ldb, ldc;
    int aa, ab, ac;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} gemm_plan;

struct cu_gemm {
    cublasLtHandle_t lt;
    void *workspace;
    float *scratch;          /* fp32 slice of W for the exact path */
    size_t scratch_floats;
    gemm_plan plans[GEMM_PLANS];
    int next_evict;
};

static void plan_destroy(gemm_plan *p) {
    if (!p->used) return;
    if (p->desc) cublasLtMatmulDescDestroy(p->desc);
    if (p->la) cublasLtMatrixLayoutDestroy(p->la);
    if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
    if (p->lc) cublasLtMatrixLayoutDestroy(p->lc);
    memset(p, 0, sizeof *p);
}

extern "C" int cu_gemm_new(cu_gemm **out, size_t scratch_bytes) {
    *out = NULL;
    cu_gemm *g = (cu_gemm *)calloc(1, sizeof *g);
    if (!g) return (int)cudaErrorMemoryAllocation;
    if (cublasLtCreate(&g->lt) != CUBLAS_STATUS_SUCCESS) {
        free(g);
        return (int)cudaErrorInitializationError;
    }
    cudaError_t e = cudaMalloc(&g->workspace, GEMM_WORKSPACE);
    if (e == cudaSuccess && scratch_bytes) {
        e = cudaMalloc((void **)&g->scratch, scratch_bytes);
        g->scratch_floats = scratch_bytes / 4;
    }
    if (e != cudaSuccess) {
        cu_gemm_free(g);
        return (int)e;
    }
    *out = g;
    return 0;
}

extern "C" void cu_gemm_free(cu_gemm *g) {
    if (!g) return;
    for (int i = 0; i < GEMM_PLANS; i++) plan_destroy(&g->plans[i]);
    if (g->workspace) cudaFree(g->workspace);
    if (g->scratch) cudaFree(g->scratch);
    if (g->lt) cublasLtDestroy(g->lt);
    free(g);
}

/* the plan for this shape, built on first use; NULL if cuBLASLt has no algorithm for it */
/* what cu_gemm_tune times the candidates on (NULL in plan_get: the heuristic's first pick) */
typedef struct {
    cudaStream_t st;
    const void *A, *B;
    void *D;
    float beta; /* as the later calls: 1 reads D as C (its contents do not matter for the time) */
    const char *name;
} tune_ctx;

static float time_algo(cu_gemm *g, gemm_plan *p, const cublasLtMatmulAlgo_t *algo, const tune_ctx *tc) {
    const float alpha = 1.0f, beta = tc->beta;
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    float best = -1;
    for (int rep = 0; rep < 4; rep++) { /* the first run warms up */
        cudaEventRecord(e0, tc->st);
        cublasStatus_t s = cublasLtMatmul(g->lt, p->desc, &alpha, tc->A, p->la, tc->B, p->lb, &beta, tc->D, p->lc,
                                          tc->D, p->lc, algo, g->workspace, GEMM_WORKSPACE, tc->st);
        cudaEventRecord(e1, tc->st);
        if (s != CUBLAS_STATUS_SUCCESS || cudaEventSynchronize(e1) != cudaSuccess) {
            best = -1;
            break;
        }
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        if (rep && (best < 0 || ms < best)) best = ms;
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaGetLastError();
    return best;
}

static gemm_plan *plan_get(cu_gemm *g, int xt, int yt, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
                           int64_t ldc, int aa, int ab, int ac, const tune_ctx *tc) {
    for (int i = 0; i < GEMM_PLANS; i++) {
        gemm_plan *p = &g->plans[i];
        if (p->used && p->xt == xt && p->yt == yt && p->m == m && p->n == n && p->k == k && p->lda == lda &&
            p->ldb == ldb && p->ldc == ldc && p->aa == aa && p->ab == ab && p->ac == ac) {
            if (!tc || p->tuned) return p->ok ? p : NULL;
            plan_destroy(p); /* tuning replaces the heuristic's plan */
            break;
        }
    }
    int slot = -1;
    for (int i = 0; i < GEMM_PLANS && slot < 0; i++)
        if (!g->plans[i].used) slot = i;
    for (int tries = 0; slot < 0; tries++) { /* round robin, sparing the tuned plans while others remain */
        int i = g->next_evict;
        g->next_evict = (g->next_evict + 1) % GEMM_PLANS;
        if (!g->plans[i].tuned || tries >= GEMM_PLANS) {
            slot = i;
            plan_destroy(&g->plans[slot]);
        }
    }
    gemm_plan *p = &g->plans[slot];
    p->used = 1;
    p->xt = xt;
    p->yt = yt;
    p->m = m, p->n = n, p->k = k, p->lda = lda, p->ldb = ldb, p->ldc = ldc;
    p->aa = aa, p->ab = ab, p->ac = ac;
    cudaDataType_t ab_t = xt == CU_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    int ok = cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS;
    ok = ok && cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) == 0;
    ok = ok && cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) == 0;
    ok = ok && cublasLtMatrixLayoutCreate(&p->la, ab_t, (uint64_t)k, (uint64_t)m, lda) == 0;
    ok = ok && cublasLtMatrixLayoutCreate(&p->lb, ab_t, (uint64_t)k, (uint64_t)n, ldb) == 0;
    ok = ok && cublasLtMatrixLayoutCreate(&p->lc, yt == CU_BF16 ? CUDA_R_16BF : CUDA_R_32F, (uint64_t)m, (uint64_t)n,
                                          ldc) == 0;
    if (ok) {
        cublasLtMatmulPreference_t pref;
        ok = cublasLtMatmulPreferenceCreate(&pref) == 0;
        if (ok) {
            uint64_t ws = GEMM_WORKSPACE;
            uint32_t a32 = (uint32_t)aa, b32 = (uint32_t)ab, c32 = (uint32_t)ac;
            cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
            cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a32, sizeof a32);
            cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &b32, sizeof b32);
            cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &c32, sizeof c32);
            cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &c32, sizeof c32);
            if (yt == CU_BF16) { /* split-K partial sums stay fp32: no reduction in the (bf16) output type */
                uint32_t mask = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
                cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &mask, sizeof mask);
            }
            cublasLtMatmulHeuristicResult_t res[GEMM_TUNE_ALGOS];
            int nres = 0;
            ok = cublasLtMatmulAlgoGetHeuristic(g->lt, p->desc, p->la, p->lb, p->lc, p->lc, pref, tc ? GEMM_TUNE_ALGOS : 1,
                                                res, &nres) == CUBLAS_STATUS_SUCCESS &&
                 nres > 0;
            if (ok) p->algo = res[0].algo;
            p->tuned = ok && tc != NULL;
            if (ok && tc && nres > 1) {
                const char *v = getenv("SALA_GEMM_TUNE");
                int verbose = v && *v == '2';
                float best = -1;
                for (int i = 0; i < nres; i++) {
                    float ms = time_algo(g, p, &res[i].algo, tc);
                    if (verbose)
                        fprintf(stderr, "sala: gemm %s %lldx%lldx%lld %s out: candidate %d %.3f ms%s\n", tc->name,
                                (long long)n, (long long)m, (long long)k, yt == CU_BF16 ? "bf16" : "fp32", i, ms,
                                ms > 0 && (best < 0 || ms < best) ? " (best so far)" : "");
                    if (ms > 0 && (best < 0 || ms < best)) {
                        best = ms;
                        p->algo = res[i].algo;
                    }
                }
            }
            cublasLtMatmulPreferenceDestroy(pref);
        }
    }
    p->ok = ok;
    return ok ? p : NULL;
}

/* Fallback: 64×64 output tiles, 16-deep k steps, 4×4 outputs per thread, fp32 FMA. */
template <class XT, class YT>
__global__ void __launch_bounds__(256) k_gemm_tiled(YT *y, int64_t ldy, const XT *x, int64_t ldx, const bf16 *W,
                                                    int64_t T, int64_t N, int64_t K, float alpha, float beta) {
    __shared__ float xs[16][64 + 4], ws[16][64 + 4];
    int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    int64_t t0 = (int64_t)blockIdx.y * 64, n0 = (int64_t)blockIdx.x * 64;
    float acc[4][4] = {};
    for (int64_t k0 = 0; k0 < K; k0 += 16) {
        for (int e = tid; e < 16 * 64; e += 256) {
            int r = e / 16, kk = e % 16;
            int64_t t = t0 + r, n = n0 + r, kg = k0 + kk;
            xs[kk][r] = (t < T && kg < K) ? to_f32(x[t * ldx + kg]) : 0.f;
            ws[kk][r] = (n < N && kg < K) ? __bfloat162float(W[n * K + kg]) : 0.f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < 16; kk++) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; i++) a[i] = xs[kk][ty + 16 * i], b[i] = ws[kk][tx + 16 * i];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int64_t t = t0 + ty + 16 * i, n = n0 + tx + 16 * j;
            if (t < T && n < N) {
                YT *py = y + t * ldy + n;
                *py = from_f32<YT>(beta == 0.f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * to_f32(*py));
            }
        }
}

__global__ void k_widen_bf16(float *dst, const bf16 *src, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = __bfloat162float(src[i]);
}

static int gemm_fallback(cudaStream_t st, void *y, cu_dtype yt, int64_t ldy, const void *x, cu_dtype xt, int64_t ldx,
                         const uint16_t *W, int64_t T, int64_t N, int64_t K, float alpha, float beta) {
    dim3 grid((unsigned)((N + 63) / 64), (unsigned)((T + 63) / 64));
    const bf16 *w = (const bf16 *)W;
    if (xt == CU_BF16 && yt == CU_BF16)
        k_gemm_tiled<bf16, bf16><<<grid, 256, 0, st>>>((bf16 *)y, ldy, (const bf16 *)x, ldx, w, T, N, K, alpha, beta);
    else if (xt == CU_BF16)
        k_gemm_tiled<bf16, float><<<grid, 256, 0, st>>>((float *)y, ldy, (const bf16 *)x, ldx, w, T, N, K, alpha, beta);
    else
        k_gemm_tiled<float, float><<<grid, 256, 0, st>>>((float *)y, ldy, (const float *)x, ldx, w, T, N, K, alpha, beta);
    return LAUNCH_CHECK();
}

static int lt_matmul(cu_gemm *g, cudaStream_t st, gemm_plan *p, const void *A, const void *B, void *y, float alpha,
                     float beta) {
    cublasStatus_t s = cublasLtMatmul(g->lt, p->desc, &alpha, A, p->la, B, p->lb, &beta, y, p->lc, y, p->lc, &p->algo,
                                      g->workspace, GEMM_WORKSPACE, st);
    return s == CUBLAS_STATUS_SUCCESS ? 0 : (int)cudaErrorLaunchFailure;
}

extern "C" int cu_gemm_run(cu_gemm *g, void *stream, void *yv, cu_dtype yt, int64_t ldy, const void *x, cu_dtype xt,
                           int64_t ldx, const uint16_t *W, int64_t T, int64_t N, int64_t K, float alpha, float beta) {
    cudaStream_t st = (cudaStream_t)stream;
    if (T <= 0 || N <= 0) return 0;
    const int es = xt == CU_BF16 ? 2 : 4;
    if (yt == CU_BF16) { /* a bf16 product: bf16 operands, nothing accumulated into y */
        if (xt != CU_BF16 || beta != 0.f) return (int)cudaErrorInvalidValue;
        gemm_plan *p = T > 4 ? plan_get(g, CU_BF16, CU_BF16, N, T, K, K, ldx, ldy, align_of(W), align_of(x),
                                        align_of(yv), NULL)
                             : NULL;
        if (!p) return gemm_fallback(st, yv, yt, ldy, x, xt, ldx, W, T, N, K, alpha, beta);
        return lt_matmul(g, st, p, W, x, yv, alpha, beta);
    }
    float *y = (float *)yv;
    if (T == 1 && cu_gemv_supported(xt, K) && align_of(W) >= 16 && align_of(x) >= 16) {
        cu_gemv_op op;
        memset(&op, 0, sizeof op);
        op.in = CU_GV_PLAIN, op.out = CU_GV_STORE;
        op.x = x, op.y = y, op.alpha = alpha, op.beta = beta, op.div = 1.0f;
        return cu_gemv(st, &op, xt, W, N, K);
    }
    if (T <= 4 && K % 8 == 0 && align_of(W) >= 16 && align_of(x) >= 16 && (ldx * es) % 16 == 0) {
        return cu_gemv_rows(st, y, ldy, x, xt, ldx, W, T, N, K, alpha, beta);
    }
    if (xt == CU_BF16) {
        gemm_plan *p = plan_get(g, CU_BF16, CU_F32, N, T, K, K, ldx, ldy, align_of(W), align_of(x), align_of(y), NULL);
        if (!p) return gemm_fallback(st, y, CU_F32, ldy, x, xt, ldx, W, T, N, K, alpha, beta);
        return lt_matmul(g, st, p, W, x, y, alpha, beta);
    }
    /* exact path: widen a slice of W rows to fp32, SGEMM into the matching columns of y */
    if (!g->scratch || (int64_t)g->scratch_floats < K * 4)
        return gemm_fallback(st, y, CU_F32, ldy, x, xt, ldx, W, T, N, K, alpha, beta);
    int64_t rows = ((int64_t)g->scratch_floats / K) & ~(int64_t)7;
    if (rows > N) rows = N;
    for (int64_t n0 = 0; n0 < N; n0 += rows) {
        int64_t m = N - n0 < rows ? N - n0 : rows;
        int64_t cnt = m * K;
        int blocks = (int)((cnt + 255) / 256 < 4096 ? (cnt + 255) / 256 : 4096);
        k_widen_bf16<<<blocks, 256, 0, st>>>(g->scratch, (const bf16 *)W + n0 * K, cnt);
        int e = LAUNCH_CHECK();
        if (e) return e;
        gemm_plan *p = plan_get(g, CU_F32, CU_F32, m, T, K, K, ldx, ldy, align_of(g->scratch), align_of(x),
                                align_of(y + n0), NULL);
        if (!p) {
            e = gemm_fallback(st, y + n0, CU_F32, ldy, x, xt, ldx, W + n0 * K, T, m, K, alpha, beta);
        } else {
            e = lt_matmul(g, st, p, g->scratch, x, y + n0, alpha, beta);
        }
        if (e) return e;
    }
    return 0;
}

extern "C" int cu_gemm_tune(cu_gemm *g, void *stream, cu_dtype yt, int64_t ldy, const void *x, int64_t ldx,
                            const uint16_t *W, int64_t T, int64_t N, int64_t K, float beta, const char *name) {
    cudaStream_t st = (cudaStream_t)stream;
    if (T <= 4 || N <= 0) return 0; /* GEMV rows: nothing to tune */
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(st, &cs) != cudaSuccess || cs != cudaStreamCaptureStatusNone) return 0;
    int e = (int)cudaStreamSynchronize(st);
    if (e) return e;
    void *d = NULL;
    const int ys = yt == CU_BF16 ? 2 : 4;
    if (cudaMalloc(&d, (size_t)(T * ldy * ys)) != cudaSuccess) { /* the candidates write here, not into the session */
        cudaGetLastError(); /* no room for the scratch output: keep the heuristic's pick */
        return 0;
    }
    if (beta != 0.f && cudaMemsetAsync(d, 0, (size_t)(T * ldy * ys), st) != cudaSuccess) { /* C: defined values */
        cudaFree(d);
        return (int)cudaGetLastError();
    }
    tune_ctx tc = {st, W, x, d, beta, name ? name : ""};
    plan_get(g, CU_BF16, yt, N, T, K, K, ldx, ldy, align_of(W), align_of(x), align_of(d), &tc);
    e = (int)cudaStreamSynchronize(st);
    cudaFree(d);
    return e;
}
