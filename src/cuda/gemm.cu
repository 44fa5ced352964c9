/* gemm.cu — y = alpha · x Wᵀ + beta · y through cuBLASLt, fp32 accumulation.
 *
 * The weights stay bf16 on the GPU (uploaded once). Two operand paths:
 *   bf16 x:  one cuBLASLt matmul, A = W (bf16), B = x (bf16), C = D = y (fp32), compute 32F: tensor cores.
 *   fp32 x:  the exact mode. cuBLASLt has no fp32 × bf16 kernel, so W is widened to fp32 one slice of
 *            rows at a time in a scratch buffer and multiplied with compute 32F on fp32 operands (the
 *            SGEMM path; TF32 would round the operands to 10 bits and is not used).
 * Row-major y[T, N] = x[T, K] · W[N, K]ᵀ is, in cuBLAS's column-major terms, Y(N×T) = Wᵀ(N×K) · X(K×T):
 * A = W viewed as K×N with ld K and transposed, B = x viewed as K×T with ld ldx, C/D = y as N×T, ld ldy.
 *
 * Choosing an algorithm (the heuristic) costs tens of microseconds, so plans are cached per shape,
 * stride and pointer alignment: a decode step reuses them. When cuBLASLt offers no algorithm for a shape
 * (odd strides), a plain tiled kernel computes the same product.
 *
 * Decode rows (T ≤ 4) go to the GEMVs of gemv.cu. */
#include <cublasLt.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/common.cuh"

#define GEMM_PLANS 96
#define GEMM_WORKSPACE (32u << 20)

typedef struct {
    int used, ok, xt;
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
static gemm_plan *plan_get(cu_gemm *g, int xt, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc,
                           int aa, int ab, int ac) {
    for (int i = 0; i < GEMM_PLANS; i++) {
        gemm_plan *p = &g->plans[i];
        if (p->used && p->xt == xt && p->m == m && p->n == n && p->k == k && p->lda == lda && p->ldb == ldb &&
            p->ldc == ldc && p->aa == aa && p->ab == ab && p->ac == ac)
            return p->ok ? p : NULL;
    }
    int slot = -1;
    for (int i = 0; i < GEMM_PLANS && slot < 0; i++)
        if (!g->plans[i].used) slot = i;
    if (slot < 0) {
        slot = g->next_evict;
        g->next_evict = (g->next_evict + 1) % GEMM_PLANS;
        plan_destroy(&g->plans[slot]);
    }
    gemm_plan *p = &g->plans[slot];
    p->used = 1;
    p->xt = xt;
    p->m = m, p->n = n, p->k = k, p->lda = lda, p->ldb = ldb, p->ldc = ldc;
    p->aa = aa, p->ab = ab, p->ac = ac;
    cudaDataType_t ab_t = xt == CU_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    int ok = cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS;
    ok = ok && cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) == 0;
    ok = ok && cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) == 0;
    ok = ok && cublasLtMatrixLayoutCreate(&p->la, ab_t, (uint64_t)k, (uint64_t)m, lda) == 0;
    ok = ok && cublasLtMatrixLayoutCreate(&p->lb, ab_t, (uint64_t)k, (uint64_t)n, ldb) == 0;
    ok = ok && cublasLtMatrixLayoutCreate(&p->lc, CUDA_R_32F, (uint64_t)m, (uint64_t)n, ldc) == 0;
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
            cublasLtMatmulHeuristicResult_t res;
            int nres = 0;
            ok = cublasLtMatmulAlgoGetHeuristic(g->lt, p->desc, p->la, p->lb, p->lc, p->lc, pref, 1, &res, &nres) ==
                     CUBLAS_STATUS_SUCCESS &&
                 nres > 0;
            if (ok) p->algo = res.algo;
            cublasLtMatmulPreferenceDestroy(pref);
        }
    }
    p->ok = ok;
    return ok ? p : NULL;
}

/* Fallback: 64×64 output tiles, 16-deep k steps, 4×4 outputs per thread, fp32 FMA. */
template <class XT>
__global__ void __launch_bounds__(256) k_gemm_tiled(float *y, int64_t ldy, const XT *x, int64_t ldx, const bf16 *W,
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
                float *py = y + t * ldy + n;
                *py = beta == 0.f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *py;
            }
        }
}

__global__ void k_widen_bf16(float *dst, const bf16 *src, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = __bfloat162float(src[i]);
}

static int gemm_fallback(cudaStream_t st, float *y, int64_t ldy, const void *x, cu_dtype xt, int64_t ldx,
                         const uint16_t *W, int64_t T, int64_t N, int64_t K, float alpha, float beta) {
    dim3 grid((unsigned)((N + 63) / 64), (unsigned)((T + 63) / 64));
    if (xt == CU_BF16)
        k_gemm_tiled<bf16><<<grid, 256, 0, st>>>(y, ldy, (const bf16 *)x, ldx, (const bf16 *)W, T, N, K, alpha, beta);
    else
        k_gemm_tiled<float><<<grid, 256, 0, st>>>(y, ldy, (const float *)x, ldx, (const bf16 *)W, T, N, K, alpha, beta);
    return LAUNCH_CHECK();
}

static int lt_matmul(cu_gemm *g, cudaStream_t st, gemm_plan *p, const void *A, const void *B, float *y, float alpha,
                     float beta) {
    cublasStatus_t s = cublasLtMatmul(g->lt, p->desc, &alpha, A, p->la, B, p->lb, &beta, y, p->lc, y, p->lc, &p->algo,
                                      g->workspace, GEMM_WORKSPACE, st);
    return s == CUBLAS_STATUS_SUCCESS ? 0 : (int)cudaErrorLaunchFailure;
}

extern "C" int cu_gemm_run(cu_gemm *g, void *stream, float *y, int64_t ldy, const void *x, cu_dtype xt, int64_t ldx,
                       const uint16_t *W, int64_t T, int64_t N, int64_t K, float alpha, float beta) {
    cudaStream_t st = (cudaStream_t)stream;
    if (T <= 0 || N <= 0) return 0;
    const int es = xt == CU_BF16 ? 2 : 4;
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
        gemm_plan *p = plan_get(g, CU_BF16, N, T, K, K, ldx, ldy, align_of(W), align_of(x), align_of(y));
        if (!p) return gemm_fallback(st, y, ldy, x, xt, ldx, W, T, N, K, alpha, beta);
        return lt_matmul(g, st, p, W, x, y, alpha, beta);
    }
    /* exact path: widen a slice of W rows to fp32, SGEMM into the matching columns of y */
    if (!g->scratch || (int64_t)g->scratch_floats < K * 4)
        return gemm_fallback(st, y, ldy, x, xt, ldx, W, T, N, K, alpha, beta);
    int64_t rows = ((int64_t)g->scratch_floats / K) & ~(int64_t)7;
    if (rows > N) rows = N;
    for (int64_t n0 = 0; n0 < N; n0 += rows) {
        int64_t m = N - n0 < rows ? N - n0 : rows;
        int64_t cnt = m * K;
        int blocks = (int)((cnt + 255) / 256 < 4096 ? (cnt + 255) / 256 : 4096);
        k_widen_bf16<<<blocks, 256, 0, st>>>(g->scratch, (const bf16 *)W + n0 * K, cnt);
        int e = LAUNCH_CHECK();
        if (e) return e;
        gemm_plan *p = plan_get(g, CU_F32, m, T, K, K, ldx, ldy, align_of(g->scratch), align_of(x), align_of(y + n0));
        if (!p) {
            e = gemm_fallback(st, y + n0, ldy, x, xt, ldx, W + n0 * K, T, m, K, alpha, beta);
        } else {
            e = lt_matmul(g, st, p, g->scratch, x, y + n0, alpha, beta);
        }
        if (e) return e;
    }
    return 0;
}
