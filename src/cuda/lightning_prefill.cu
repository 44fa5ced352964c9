/* lightning_prefill.cu — Lightning attention (constant-decay simple GLA) over a call's T tokens in the
 * chunked form, with the fp32 state kept on chip for the whole sweep.
 *
 * Per head h with decay λ and 64-token chunks (i, j index tokens inside a chunk of Cn ≤ 64 tokens):
 *     A[i][j] = (q_i·k_j) λ^(i−j) for j ≤ i,  0 otherwise                         (intra-chunk, masked)
 *     o_i     = s · ( Σ_j A[i][j] v_j  +  λ^(i+1) q_i S )                          (S = state before the chunk)
 *     S      ← λ^Cn S + Σ_j λ^(Cn−1−j) k_jᵀ v_j
 * which equals the recurrence S ← λS + kᵀv, o = s·q·S (MODEL.md §3).
 *
 * Two kernels. The intra-chunk part (A and s·A·V) depends on no state: one block per (chunk, head), all
 * chunks at once, writing o. The inter-chunk part is a sweep: one block per (head, slice of DV value
 * columns) walks the chunks in order adding s·λ^(i+1)·q_i S to o and updating its S[hd][DV] slice, which
 * never leaves shared memory until the end (slicing the columns gives nh·hd/DV blocks, 256 for the
 * released model). All products are fp32 FMA (the exact mode needs fp32; a tensor-core variant for the
 * bf16 mode is future work, see docs/PERF.md). */
#include "cuda/common.cuh"

#define LC 64 /* chunk length */

/* intra-chunk: o[t0+i, h, :] = s · Σ_{j ≤ i} (q_i·k_j) λ^(i−j) v_j for one (chunk, head) */
template <int D>
__global__ void __launch_bounds__(256) k_lightning_intra(float *o, int64_t ldo, const float *q, const float *k,
                                                         const float *v, int64_t ld, const double *lambda, float s,
                                                         int64_t T) {
    constexpr int QP = D + 4, CPT = D / 16;
    constexpr int QA = LC * QP > LC * (LC + 1) ? LC * QP : LC * (LC + 1); /* room for Q, later A */
    extern __shared__ float4 smem_f4[];
    float *Qs = (float *)smem_f4;  /* [LC][QP], later A [LC][LC + 1] */
    float *Ks = Qs + QA;           /* [LC][QP] */
    float *Vs = Ks + LC * QP;      /* [LC][QP] */
    float *pw = Vs + LC * QP;      /* [LC] λ^k */
    const int tid = threadIdx.x, h = blockIdx.y;
    const int64_t t0 = (int64_t)blockIdx.x * LC;
    const int Cn = T - t0 < LC ? (int)(T - t0) : LC;
    for (int e = tid; e < LC; e += 256) pw[e] = (float)pow(lambda[h], (double)e);
    for (int e = tid; e < LC * D; e += 256) {
        int i = e / D, d = e % D;
        float qv = 0.f, kv = 0.f, vv = 0.f;
        if (i < Cn) {
            int64_t off = (t0 + i) * ld + (int64_t)h * D + d;
            qv = q[off], kv = k[off], vv = v[off];
        }
        Qs[i * QP + d] = qv, Ks[i * QP + d] = kv, Vs[i * QP + d] = vv;
    }
    __syncthreads();
    const int ti = tid / 16, tj = tid % 16; /* rows ti*4+a, columns tj+16b */
    float acc[4][4] = {};
    for (int d = 0; d < D; d += 4) {
        float4 qa[4], kb[4];
#pragma unroll
        for (int a = 0; a < 4; a++) qa[a] = *(const float4 *)&Qs[(ti * 4 + a) * QP + d];
#pragma unroll
        for (int b = 0; b < 4; b++) kb[b] = *(const float4 *)&Ks[(tj + 16 * b) * QP + d];
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++) {
                acc[a][b] = fmaf(qa[a].x, kb[b].x, acc[a][b]);
                acc[a][b] = fmaf(qa[a].y, kb[b].y, acc[a][b]);
                acc[a][b] = fmaf(qa[a].z, kb[b].z, acc[a][b]);
                acc[a][b] = fmaf(qa[a].w, kb[b].w, acc[a][b]);
            }
    }
    __syncthreads(); /* Q is dead: A takes its place */
    float *As = Qs;
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int b = 0; b < 4; b++) {
            int i = ti * 4 + a, j = tj + 16 * b;
            As[i * (LC + 1) + j] = (j <= i && i < Cn) ? acc[a][b] * pw[i - j] : 0.f;
        }
    __syncthreads();
    float out[4][CPT] = {};
    for (int j = 0; j < LC; j++) {
        float av[4];
#pragma unroll
        for (int a = 0; a < 4; a++) av[a] = As[(ti * 4 + a) * (LC + 1) + j];
#pragma unroll
        for (int c = 0; c < CPT; c++) {
            float vv = Vs[j * QP + tj + 16 * c];
#pragma unroll
            for (int a = 0; a < 4; a++) out[a][c] = fmaf(av[a], vv, out[a][c]);
        }
    }
#pragma unroll
    for (int a = 0; a < 4; a++) {
        int i = ti * 4 + a;
        if (i >= Cn) continue;
#pragma unroll
        for (int c = 0; c < CPT; c++) o[(t0 + i) * ldo + (int64_t)h * D + tj + 16 * c] = s * out[a][c];
    }
}

/* inter-chunk sweep: o += s·λ^(i+1)·q_i S, S ← λ^Cn S + Σ_j λ^(Cn−1−j) k_jᵀ v_j, for (head, DV columns) */
template <int D, int DV>
__global__ void __launch_bounds__(256) k_lightning_inter(float *o, int64_t ldo, const float *q, const float *k,
                                                         const float *v, int64_t ld, float *state,
                                                         const double *lambda, float s, int64_t T) {
    constexpr int QP = D + 4;  /* pitch of Qs/Ks rows (keeps float4 loads conflict-free) */
    constexpr int VP = DV + 4;
    constexpr int CPT = DV / 8; /* output columns per thread in the O step */
    extern __shared__ float4 smem_f4[];
    float *Qs = (float *)smem_f4; /* [LC][QP] */
    float *Ks = Qs + LC * QP;     /* [LC][QP] */
    float *Vs = Ks + LC * QP;     /* [LC][VP] value slice */
    float *Ss = Vs + LC * VP;     /* [D][DV] state slice */
    float *pw = Ss + D * DV;      /* [LC + 1] λ^k */
    const int tid = threadIdx.x, h = blockIdx.y, c0 = blockIdx.x * DV;
    float *Sg = state + (int64_t)h * D * D; /* [D][D] */
    for (int e = tid; e < D * DV; e += 256) Ss[e] = Sg[(int64_t)(e / DV) * D + c0 + e % DV];
    for (int e = tid; e <= LC; e += 256) pw[e] = (float)pow(lambda[h], (double)e);
    __syncthreads();

    for (int64_t t0 = 0; t0 < T; t0 += LC) {
        const int Cn = T - t0 < LC ? (int)(T - t0) : LC;
        for (int e = tid; e < LC * D; e += 256) {
            int i = e / D, d = e % D;
            float qv = 0.f, kv = 0.f;
            if (i < Cn) {
                int64_t off = (t0 + i) * ld + (int64_t)h * D + d;
                qv = q[off];
                kv = k[off];
            }
            Qs[i * QP + d] = qv;
            Ks[i * QP + d] = kv;
        }
        for (int e = tid; e < LC * DV; e += 256) {
            int i = e / DV, c = e % DV;
            Vs[i * VP + c] = i < Cn ? v[(t0 + i) * ld + (int64_t)h * D + c0 + c] : 0.f;
        }
        __syncthreads();

        /* o += s λ^(i+1) Q S: thread (oi, oc) owns rows 2oi, 2oi+1, columns oc + 8cc */
        {
            const int oi = tid / 8, oc = tid % 8, i0 = 2 * oi, i1 = 2 * oi + 1;
            float qs0[CPT] = {}, qs1[CPT] = {};
            for (int d = 0; d < D; d++) {
                float q0 = Qs[i0 * QP + d], q1 = Qs[i1 * QP + d];
#pragma unroll
                for (int cc = 0; cc < CPT; cc++) {
                    float sv = Ss[d * DV + oc + 8 * cc];
                    qs0[cc] = fmaf(q0, sv, qs0[cc]);
                    qs1[cc] = fmaf(q1, sv, qs1[cc]);
                }
            }
#pragma unroll
            for (int cc = 0; cc < CPT; cc++) {
                int c = oc + 8 * cc;
                if (i0 < Cn) o[(t0 + i0) * ldo + (int64_t)h * D + c0 + c] += s * (pw[i0 + 1] * qs0[cc]);
                if (i1 < Cn) o[(t0 + i1) * ldo + (int64_t)h * D + c0 + c] += s * (pw[i1 + 1] * qs1[cc]);
            }
        }
        __syncthreads();

        /* S ← λ^Cn S + Σ_j λ^(Cn−1−j) k_jᵀ v_j, 2×4 tiles of S per thread */
        for (int blk = tid; blk < (D / 2) * (DV / 4); blk += 256) {
            const int d0 = (blk / (DV / 4)) * 2, cb = (blk % (DV / 4)) * 4;
            float acc[2][4];
            const float dec = pw[Cn];
#pragma unroll
            for (int a = 0; a < 2; a++)
#pragma unroll
                for (int b = 0; b < 4; b++) acc[a][b] = dec * Ss[(d0 + a) * DV + cb + b];
            for (int j = 0; j < Cn; j++) {
                const float w = pw[Cn - 1 - j];
                float2 kk = *(const float2 *)&Ks[j * QP + d0];
                float4 vv = *(const float4 *)&Vs[j * VP + cb];
                float ka[2] = {kk.x * w, kk.y * w}, vb[4] = {vv.x, vv.y, vv.z, vv.w};
#pragma unroll
                for (int a = 0; a < 2; a++)
#pragma unroll
                    for (int b = 0; b < 4; b++) acc[a][b] = fmaf(ka[a], vb[b], acc[a][b]);
            }
#pragma unroll
            for (int a = 0; a < 2; a++)
#pragma unroll
                for (int b = 0; b < 4; b++) Ss[(d0 + a) * DV + cb + b] = acc[a][b];
        }
        __syncthreads();
    }
    for (int e = tid; e < D * DV; e += 256) Sg[(int64_t)(e / DV) * D + c0 + e % DV] = Ss[e];
}

template <int D, int DV>
static int launch_prefill(cudaStream_t st, float *o, int64_t ldo, const float *q, const float *k, const float *v,
                          int64_t ld, float *state, const double *lambda, float s, int64_t T, int nh) {
    constexpr int QA = LC * (D + 4) > LC * (LC + 1) ? LC * (D + 4) : LC * (LC + 1);
    size_t smem_a = sizeof(float) * (size_t)(QA + 2 * LC * (D + 4) + LC);
    size_t smem_b = sizeof(float) * (size_t)(2 * LC * (D + 4) + LC * (DV + 4) + D * DV + LC + 1);
    static bool attr_set = false;
    if (!attr_set) {
        cudaFuncSetAttribute(k_lightning_intra<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_a);
        cudaFuncSetAttribute(k_lightning_inter<D, DV>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_b);
        attr_set = true;
    }
    dim3 ga((unsigned)((T + LC - 1) / LC), nh);
    k_lightning_intra<D><<<ga, 256, smem_a, st>>>(o, ldo, q, k, v, ld, lambda, s, T);
    int e = LAUNCH_CHECK();
    if (e) return e;
    dim3 gb(D / DV, nh);
    k_lightning_inter<D, DV><<<gb, 256, smem_b, st>>>(o, ldo, q, k, v, ld, state, lambda, s, T);
    return LAUNCH_CHECK();
}

extern "C" int cu_lightning_prefill(void *stream, float *o, int64_t ldo, const float *q, const float *k, const float *v,
                                    int64_t ld, float *state, const double *lambda, float s, int64_t T, int nh, int hd) {
    cudaStream_t st = (cudaStream_t)stream;
    if (T <= 0) return 0;
    switch (hd) {
    case 16: return launch_prefill<16, 16>(st, o, ldo, q, k, v, ld, state, lambda, s, T, nh);
    case 32: return launch_prefill<32, 16>(st, o, ldo, q, k, v, ld, state, lambda, s, T, nh);
    case 64: return launch_prefill<64, 16>(st, o, ldo, q, k, v, ld, state, lambda, s, T, nh);
    case 128: return launch_prefill<128, 16>(st, o, ldo, q, k, v, ld, state, lambda, s, T, nh);
    default: return (int)cudaErrorInvalidValue;
    }
}
