/* lightning_prefill.cu — Lightning attention (constant-decay simple GLA) over a call's T tokens in the
 * chunked form, with the fp32 state kept on chip for the whole sweep.
 *
 * Per head h with decay λ and 64-token chunks (i, j index tokens inside a chunk of Cn ≤ 64 tokens):
 *     A[i][j] = (q_i·k_j) λ^(i−j) for j ≤ i,  0 otherwise                         (intra-chunk, masked)
 *     o_i     = s · ( Σ_j A[i][j] v_j  +  λ^(i+1) q_i S )                          (S = state before the chunk)
 *     S      ← λ^Cn S + Σ_j λ^(Cn−1−j) k_jᵀ v_j
 * which equals the recurrence S ← λS + kᵀv, o = s·q·S (MODEL.md §3).
 *
 * fp32 (exact) mode, two kernels of fp32 FMA. The intra-chunk part (A and s·A·V) depends on no state: one
 * block per (chunk, head), all chunks at once, writing o. The inter-chunk part is a sweep: one block per
 * (head, slice of DV value columns) walks the chunks in order adding s·λ^(i+1)·q_i S to o and updating its
 * S[hd][DV] slice, which never leaves shared memory until the end (nh·hd/DV blocks, 256 for the released
 * model).
 *
 * bf16 mode (cu_lightning_prefill_mma), one kernel on tensor cores (mma.sync m16n8k16, bf16 operands, fp32
 * accumulation): one block of 8 warps per (head, slice of BV = 32 value columns) walks the chunks with its
 * S[hd][BV] slice in registers (fp32 mma accumulators) and does the whole chunk — A = QKᵀ masked and
 * decayed, A·V, λ^(i+1)·Q·S, the state update — so q, k, v are read once from DRAM and o is written once:
 * no workspace. The next chunk's q|k|v are loaded into registers while the current one is computed.
 * Rounding as the fla
 * reference (chunk_simple_gla): q, k, v, A and the state inside q·S are bf16, the decay weights
 * λ^(Cn−1−j) are applied to v before its rounding, everything accumulates in fp32, the state stays fp32. */
#include "cuda/common.cuh"
#include "cuda/mma_core.cuh"

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

/* ---- bf16 mode: one tensor-core sweep per (head, BV value columns) ---- */

template <int D, int BV> struct lt_shape {
    static constexpr int QP = D + 8;             /* pitch (bf16) of Qs, Ks rows: conflict-free fragments */
    static constexpr int VP = BV + 8;            /* pitch (bf16) of Vs, Vw, Sb rows */
    static constexpr int OP = BV + 8;            /* pitch (fp32) of Op rows: conflict-free float2 stores */
    static constexpr int MT = D / 16;            /* 16-row tiles (key dims) of the state slice */
    static constexpr int NT = BV / 8;            /* 8-column tiles (value columns) of the slice */
    static constexpr int QF = LC * D / 4 / 256;  /* float4 of q (and of k) per thread and chunk */
    static constexpr int VF = LC * BV / 4 / 256; /* float4 of the value slice per thread and chunk */
    static constexpr size_t smem = sizeof(float) * (size_t)(LC * OP + LC + 4) +
                                   sizeof(bf16) * (size_t)(2 * LC * QP + 2 * LC * VP + D * VP);
    static_assert(D % 16 == 0 && BV % 16 == 0 && BV <= D, "tile shapes");
    static_assert(QF >= 1 && LC * D / 4 % 256 == 0 && VF >= 1 && LC * BV / 4 % 256 == 0, "load shapes");
};

/* Element e = threadIdx.x + 256·i of a chunk's q (or k) rows: row e / (D/4), columns (e % (D/4))·4 ..+3;
 * of the value slice: row e / (BV/4), columns (e % (BV/4))·4 ..+3. */

/* The raw form of 4 consecutive elements of q, k or v as loaded (float4, or uint2 = 4 bf16): the next chunk
 * is prefetched into registers in this form and converted only when stored to shared memory, so the loads
 * stay in flight during the current chunk's math. */
template <class IT> struct lt_raw;
template <> struct lt_raw<float> { typedef float4 type; };
template <> struct lt_raw<bf16> { typedef uint2 type; };

static __device__ __forceinline__ void lt_zero(float4 &x) { x = make_float4(0.f, 0.f, 0.f, 0.f); }
static __device__ __forceinline__ void lt_zero(uint2 &x) { x = make_uint2(0u, 0u); }
static __device__ __forceinline__ void lt_ld(float4 &x, const float *p) { x = __ldg((const float4 *)p); }
static __device__ __forceinline__ void lt_ld(uint2 &x, const bf16 *p) { x = __ldg((const uint2 *)p); }
static __device__ __forceinline__ float4 lt_f32(float4 x) { return x; }
static __device__ __forceinline__ float4 lt_f32(uint2 x) { return widen4(x); }
static __device__ __forceinline__ void lt_st(bf16 *p, float4 x) { store4(p, x); }
static __device__ __forceinline__ void lt_st(bf16 *p, uint2 x) { *(uint2 *)p = x; } /* already bf16 */

/* the next chunk's q, k and value slice into registers, rows ≥ Cn zero */
template <int D, int BV, class R, class IT>
static __device__ __forceinline__ void lt_fetch(R (&pq)[lt_shape<D, BV>::QF], R (&pk)[lt_shape<D, BV>::QF],
                                                R (&pv)[lt_shape<D, BV>::VF], const IT *qh, const IT *kh,
                                                const IT *vh, int64_t ld, int64_t t0, int Cn) {
    using SH = lt_shape<D, BV>;
#pragma unroll
    for (int i = 0; i < SH::QF; i++) {
        const int e = threadIdx.x + 256 * i, r = e / (D / 4), c = (e % (D / 4)) * 4;
        lt_zero(pq[i]), lt_zero(pk[i]);
        if (r < Cn) {
            const int64_t off = (t0 + r) * ld + c;
            lt_ld(pq[i], qh + off);
            lt_ld(pk[i], kh + off);
        }
    }
#pragma unroll
    for (int i = 0; i < SH::VF; i++) {
        const int e = threadIdx.x + 256 * i, r = e / (BV / 4), c = (e % (BV / 4)) * 4;
        lt_zero(pv[i]);
        if (r < Cn) lt_ld(pv[i], vh + (t0 + r) * ld + c);
    }
}

/* bf16 tiles Qs, Ks, Vs and Vw (v_j · λ^(Cn−1−j)) from the chunk's q, k, v element groups */
template <int D, int BV, class R>
static __device__ __forceinline__ void lt_put_q(bf16 *Qs, bf16 *Ks, int i, R q, R k) {
    const int e = threadIdx.x + 256 * i, r = e / (D / 4), c = (e % (D / 4)) * 4;
    lt_st(Qs + r * (D + 8) + c, q);
    lt_st(Ks + r * (D + 8) + c, k);
}
template <int D, int BV, class R>
static __device__ __forceinline__ void lt_put_v(bf16 *Vs, bf16 *Vw, int i, R raw, const float *pw, int Cn) {
    const int e = threadIdx.x + 256 * i, r = e / (BV / 4), c = (e % (BV / 4)) * 4;
    const float w = r < Cn ? pw[Cn - 1 - r] : 0.f;
    lt_st(Vs + r * (BV + 8) + c, raw);
    float4 x = lt_f32(raw);
    x.x *= w, x.y *= w, x.z *= w, x.w *= w;
    store4(Vw + r * (BV + 8) + c, x);
}

/* Sb = bf16(state slice) from the C fragments (rows 16·mt + g (+8), columns 8·nt + 2t (+1)) */
template <int D, int BV>
static __device__ __forceinline__ void lt_put_state(bf16 *Sb, const float (&Sr)[BV / 8][4]) {
    using SH = lt_shape<D, BV>;
    const int mt = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    if (mt >= SH::MT) return;
#pragma unroll
    for (int nt = 0; nt < SH::NT; nt++) {
        bf16 *p = Sb + (16 * mt + g) * SH::VP + 8 * nt + 2 * t;
        *(uint32_t *)p = pack_bf16(Sr[nt][0], Sr[nt][1]);
        *(uint32_t *)(p + 8 * SH::VP) = pack_bf16(Sr[nt][2], Sr[nt][3]);
    }
}

/* The intra-chunk part of row tile R (queries 16R..16R+15): A = Q Kᵀ over the causal keys 0..16R+15
 * (2R+2 independent accumulator chains), masked and decayed, then Oa = A V. R is a template argument so
 * that every loop is unrolled with compile-time bounds. */
template <int D, int BV, int R>
static __device__ __forceinline__ void lt_intra(const uint32_t (&qf)[D / 16][4], const bf16 *Ks, const bf16 *Vs,
                                                const float *pw, float (&Oa)[BV / 8][4]) {
    constexpr int QP = D + 8, VP = BV + 8, NP = R + 1; /* NP pairs of 8-key tiles */
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    float P[2 * NP][4];
#pragma unroll
    for (int n = 0; n < 2 * NP; n++) P[n][0] = P[n][1] = P[n][2] = P[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
        for (int np = 0; np < NP; np++) {
            /* B fragments of key tiles 2np, 2np+1: keys 16np + (lane & 7) + 8(lane ≥ 16), dims +8 for odd octets */
            uint32_t b[4];
            ldsm_x4(b, Ks + (16 * np + (lane & 7) + 8 * (lane >> 4)) * QP + kk * 16 + 8 * ((lane >> 3) & 1));
            uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
            mma16816(P[2 * np], qf[kk], b0);
            mma16816(P[2 * np + 1], qf[kk], b1);
        }
#pragma unroll
    for (int n = 0; n < 2 * NP; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int i = 16 * R + g + 8 * (e >> 1), j = 8 * n + 2 * t + (e & 1);
            P[n][e] = j <= i ? P[n][e] * pw[i - j] : 0.f;
        }
#pragma unroll
    for (int ks = 0; ks < NP; ks++) {
        uint32_t a[4] = {pack_bf16(P[2 * ks][0], P[2 * ks][1]), pack_bf16(P[2 * ks][2], P[2 * ks][3]),
                         pack_bf16(P[2 * ks + 1][0], P[2 * ks + 1][1]), pack_bf16(P[2 * ks + 1][2], P[2 * ks + 1][3])};
#pragma unroll
        for (int dp = 0; dp < BV / 16; dp++) {
            uint32_t rr[4];
            ldsm_x4_trans(rr, Vs + (ks * 16 + (lane & 15)) * VP + dp * 16 + (lane >> 4) * 8);
            uint32_t b0[2] = {rr[0], rr[1]}, b1[2] = {rr[2], rr[3]};
            mma16816(Oa[2 * dp], a, b0);
            mma16816(Oa[2 * dp + 1], a, b1);
        }
    }
}

/* Block (column slice, head), 8 warps. Per chunk: warps 0-3 take the row tile r = warp: the intra-chunk
 * part (lt_intra) → Oa in registers; warps 4-7 take the row tile r = warp − 4: λ^(i+1)·Q·Sb → Op
 * (shared); warp w updates the state row tile w (key dims 16w..16w+15) with Kᵀ·Vw (A = Kᵀ through
 * ldmatrix.trans of Ks). After a barrier warps 0-3 write s·(Oa + Op), everyone stores the new Sb and the
 * prefetched next chunk. */
template <int D, int BV, class IT>
__global__ void __launch_bounds__(256, 1) k_lightning_mma(float *o, int64_t ldo, const IT *q, const IT *k,
                                                          const IT *v, int64_t ld, float *state,
                                                          const double *lambda, float s, int64_t T) {
    using SH = lt_shape<D, BV>;
    constexpr int QP = SH::QP, VP = SH::VP, OP = SH::OP, MT = SH::MT, NT = SH::NT, NR = SH::QF, NV = SH::VF;
    static_assert(QP == mma_shape<D>::QP && LC == MMA_BK, "mma_q_frags layout");
    extern __shared__ float4 smem_f4[];
    float *Op = (float *)smem_f4;      /* [LC][OP] λ^(i+1) q_i S (the warps 4-7 half of o) */
    float *pw = Op + LC * OP;          /* [LC + 1] λ^e */
    bf16 *Qs = (bf16 *)(pw + LC + 4);  /* [LC][QP] */
    bf16 *Ks = Qs + LC * QP;           /* [LC][QP] */
    bf16 *Vs = Ks + LC * QP;           /* [LC][VP] value slice */
    bf16 *Vw = Vs + LC * VP;           /* [LC][VP] value slice · λ^(Cn−1−j) */
    bf16 *Sb = Vw + LC * VP;           /* [D][VP] state slice entering the chunk */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    const int h = blockIdx.y, c0 = blockIdx.x * BV;
    const IT *qh = q + (int64_t)h * D, *kh = k + (int64_t)h * D, *vh = v + (int64_t)h * D + c0;
    float *Sg = state + (int64_t)h * D * D + c0; /* Sg[d·D + c]: this block's columns */
    const bool o_pairs = (ldo & 1) == 0 && ((uintptr_t)o & 7) == 0; /* o written as float2 */
    for (int e = tid; e <= LC; e += 256) pw[e] = (float)pow(lambda[h], (double)e);

    const int mt = warp; /* the state row tile of this warp, if mt < MT */
    float Sr[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        Sr[nt][0] = Sr[nt][1] = Sr[nt][2] = Sr[nt][3] = 0.f;
        if (mt < MT) {
            const float *p = Sg + (int64_t)(16 * mt + g) * D + 8 * nt + 2 * t;
            Sr[nt][0] = p[0], Sr[nt][1] = p[1];
            Sr[nt][2] = p[8 * D], Sr[nt][3] = p[8 * D + 1];
        }
    }
    typename lt_raw<IT>::type pq[NR], pk[NR], pv[NV];
    const int64_t nch = (T + LC - 1) / LC;
    const int Cn0 = T < LC ? (int)T : LC;
    lt_fetch<D, BV>(pq, pk, pv, qh, kh, vh, ld, 0, Cn0);
    __syncthreads(); /* pw */
#pragma unroll
    for (int i = 0; i < NR; i++) lt_put_q<D, BV>(Qs, Ks, i, pq[i], pk[i]);
#pragma unroll
    for (int i = 0; i < NV; i++) lt_put_v<D, BV>(Vs, Vw, i, pv[i], pw, Cn0);
    lt_put_state<D, BV>(Sb, Sr);
    __syncthreads();

    for (int64_t ch = 0; ch < nch; ch++) {
        const int64_t t0 = ch * LC;
        const int Cn = T - t0 < LC ? (int)(T - t0) : LC;
        const bool more = ch + 1 < nch;
        const int Cn1 = !more ? 0 : T - t0 - LC < LC ? (int)(T - t0 - LC) : LC;
        if (more) lt_fetch<D, BV>(pq, pk, pv, qh, kh, vh, ld, t0 + LC, Cn1);

        float Oa[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) Oa[nt][0] = Oa[nt][1] = Oa[nt][2] = Oa[nt][3] = 0.f;
        const int r = warp & 3;
        uint32_t qf[D / 16][4];
        mma_q_frags<D>(Qs, 16 * r, qf);
        if (warp < 4) {
            switch (warp) {
            case 0: lt_intra<D, BV, 0>(qf, Ks, Vs, pw, Oa); break;
            case 1: lt_intra<D, BV, 1>(qf, Ks, Vs, pw, Oa); break;
            case 2: lt_intra<D, BV, 2>(qf, Ks, Vs, pw, Oa); break;
            default: lt_intra<D, BV, 3>(qf, Ks, Vs, pw, Oa); break;
            }
        } else {
            /* Op = λ^(i+1) Q Sb, even and odd k-steps in separate accumulators (shorter chains) */
            float Oq[2][NT][4];
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) Oq[0][nt][e] = Oq[1][nt][e] = 0.f;
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
                for (int dp = 0; dp < BV / 16; dp++) {
                    uint32_t rr[4];
                    ldsm_x4_trans(rr, Sb + (kk * 16 + (lane & 15)) * VP + dp * 16 + (lane >> 4) * 8);
                    uint32_t b0[2] = {rr[0], rr[1]}, b1[2] = {rr[2], rr[3]};
                    mma16816(Oq[kk & 1][2 * dp], qf[kk], b0);
                    mma16816(Oq[kk & 1][2 * dp + 1], qf[kk], b1);
                }
            const int i0 = 16 * r + g;
            const float w0 = pw[i0 + 1], w1 = pw[i0 + 9];
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                *(float2 *)&Op[i0 * OP + 8 * nt + 2 * t] =
                    make_float2(w0 * (Oq[0][nt][0] + Oq[1][nt][0]), w0 * (Oq[0][nt][1] + Oq[1][nt][1]));
                *(float2 *)&Op[(i0 + 8) * OP + 8 * nt + 2 * t] =
                    make_float2(w1 * (Oq[0][nt][2] + Oq[1][nt][2]), w1 * (Oq[0][nt][3] + Oq[1][nt][3]));
            }
        }
        /* S ← λ^Cn S + Kᵀ Vw on this warp's state row tile */
        if (mt < MT) {
            const float dec = pw[Cn];
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) Sr[nt][e] *= dec;
#pragma unroll
            for (int ks = 0; ks < 4; ks++) {
                uint32_t a[4];
                ldsm_x4_trans(a, Ks + (16 * ks + (lane & 7) + 8 * (lane >> 4)) * QP + 16 * mt + 8 * ((lane >> 3) & 1));
#pragma unroll
                for (int dp = 0; dp < BV / 16; dp++) {
                    uint32_t rr[4];
                    ldsm_x4_trans(rr, Vw + (ks * 16 + (lane & 15)) * VP + dp * 16 + (lane >> 4) * 8);
                    uint32_t b0[2] = {rr[0], rr[1]}, b1[2] = {rr[2], rr[3]};
                    mma16816(Sr[2 * dp], a, b0);
                    mma16816(Sr[2 * dp + 1], a, b1);
                }
            }
        }
        __syncthreads();
        if (warp < 4) {
            const int i0 = 16 * r + g, i1 = i0 + 8;
            float *o0 = o + (t0 + i0) * ldo + (int64_t)h * D + c0 + 2 * t, *o1 = o0 + 8 * ldo;
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                const float2 x0 = *(const float2 *)&Op[i0 * OP + 8 * nt + 2 * t];
                const float2 x1 = *(const float2 *)&Op[i1 * OP + 8 * nt + 2 * t];
                const float2 y0 = make_float2(s * (Oa[nt][0] + x0.x), s * (Oa[nt][1] + x0.y));
                const float2 y1 = make_float2(s * (Oa[nt][2] + x1.x), s * (Oa[nt][3] + x1.y));
                if (o_pairs) {
                    if (i0 < Cn) *(float2 *)(o0 + 8 * nt) = y0;
                    if (i1 < Cn) *(float2 *)(o1 + 8 * nt) = y1;
                } else {
                    if (i0 < Cn) o0[8 * nt] = y0.x, o0[8 * nt + 1] = y0.y;
                    if (i1 < Cn) o1[8 * nt] = y1.x, o1[8 * nt + 1] = y1.y;
                }
            }
        }
        lt_put_state<D, BV>(Sb, Sr);
        if (more) {
#pragma unroll
            for (int i = 0; i < NR; i++) lt_put_q<D, BV>(Qs, Ks, i, pq[i], pk[i]);
#pragma unroll
            for (int i = 0; i < NV; i++) lt_put_v<D, BV>(Vs, Vw, i, pv[i], pw, Cn1);
        }
        __syncthreads();
    }
    if (mt < MT)
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            float *p = Sg + (int64_t)(16 * mt + g) * D + 8 * nt + 2 * t;
            p[0] = Sr[nt][0], p[1] = Sr[nt][1];
            p[8 * D] = Sr[nt][2], p[8 * D + 1] = Sr[nt][3];
        }
}

template <int D, int BV, class IT>
static int launch_mma(cudaStream_t st, float *o, int64_t ldo, const IT *q, const IT *k, const IT *v, int64_t ld,
                      float *state, const double *lambda, float s, int64_t T, int nh) {
    const size_t smem = lt_shape<D, BV>::smem;
    static bool attr_set = false;
    if (!attr_set) {
        cudaFuncSetAttribute(k_lightning_mma<D, BV, IT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        attr_set = true;
    }
    k_lightning_mma<D, BV, IT><<<dim3(D / BV, nh), 256, smem, st>>>(o, ldo, q, k, v, ld, state, lambda, s, T);
    return LAUNCH_CHECK();
}

template <class IT>
static int mma_t(cudaStream_t st, float *o, int64_t ldo, const IT *q, const IT *k, const IT *v, int64_t ld,
                 float *state, const double *lambda, float s, int64_t T, int nh, int hd) {
    switch (hd) {
    case 16: return launch_mma<16, 16>(st, o, ldo, q, k, v, ld, state, lambda, s, T, nh);
    case 32: return launch_mma<32, 32>(st, o, ldo, q, k, v, ld, state, lambda, s, T, nh);
    case 64: return launch_mma<64, 32>(st, o, ldo, q, k, v, ld, state, lambda, s, T, nh);
    case 128: return launch_mma<128, 32>(st, o, ldo, q, k, v, ld, state, lambda, s, T, nh);
    default: return (int)cudaErrorInvalidValue;
    }
}

/* 4-element loads of q, k, v: rows of a multiple of 4 elements, 16-byte (fp32) or 8-byte (bf16) aligned */
extern "C" int cu_lightning_mma_takes(const void *q, const void *k, const void *v, cu_dtype qt, int64_t ld, int hd) {
    const uintptr_t al = qt == CU_BF16 ? 8 : 16;
    return (hd == 16 || hd == 32 || hd == 64 || hd == 128) && ld % 4 == 0 &&
           ((uintptr_t)q | (uintptr_t)k | (uintptr_t)v) % al == 0;
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

extern "C" int cu_lightning_prefill_mma(void *stream, float *o, int64_t ldo, const void *q, const void *k,
                                        const void *v, cu_dtype qt, int64_t ld, float *state, const double *lambda,
                                        float s, int64_t T, int nh, int hd) {
    cudaStream_t st = (cudaStream_t)stream;
    if (T <= 0) return 0;
    const bool takes = cu_lightning_mma_takes(q, k, v, qt, ld, hd);
    if (qt == CU_BF16) {
        if (!takes) return (int)cudaErrorInvalidValue;
        return mma_t(st, o, ldo, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, ld, state, lambda, s, T, nh, hd);
    }
    if (takes)
        return mma_t(st, o, ldo, (const float *)q, (const float *)k, (const float *)v, ld, state, lambda, s, T, nh, hd);
    return cu_lightning_prefill(stream, o, ldo, (const float *)q, (const float *)k, (const float *)v, ld, state, lambda,
                                s, T, nh, hd);
}
