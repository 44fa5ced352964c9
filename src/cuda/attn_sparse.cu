/* attn_sparse.cu — InfLLM-v2 stage 2: each query head attends to exactly the keys of the 64-token blocks
 * chosen for its row and KV group (MODEL.md §4 step 5), key position ≤ row position.
 *
 * A block takes 16·RM (row, head) pairs of one group like the dense kernel, i.e. a few adjacent rows.
 * Their block lists (ascending) are merged on the fly by warp 0 into one ascending sequence of distinct
 * blocks, each with a bitmask of the rows that chose it; every block of the union is loaded once and
 * scored for all query vectors, masked to −inf for rows that did not choose it. Adjacent rows share
 * their local window and most of their top-k, so the union is barely larger than one list.
 * Decode (one row) splits its list across blocks (attn_core.cuh). fp32 caches (the exact mode) run here;
 * bf16 caches go to the tensor-core kernel (attn_mma.cu), which merges the lists the same way. */
#include "cuda/attn_core.cuh"
#include "cuda/attn_internal.cuh"

template <int HD, int RM, class KT>
__global__ void __launch_bounds__(256) k_attn_sparse(float *o, int64_t ldo, const float *q, int64_t ldq, const KT *K,
                                                     const KT *V, const int32_t *blocks, const int32_t *nsel, int64_t T,
                                                     int64_t pos0, int nh, int nkv, int budget, float scale, int nsplit,
                                                     float *part) {
    typedef att_shape<HD, RM> S;
    extern __shared__ float4 smem_f4[];
    float *Qs = (float *)smem_f4, *KVs = Qs + S::M * S::QP, *Ps = KVs + ATT_BK * S::QP;
    __shared__ int ptr[64];
    __shared__ int cur_blk;
    __shared__ unsigned long long cur_mask;
    const int g = blockIdx.y, split = blockIdx.z, G = nh / nkv;
    const int tm = threadIdx.x / 16, tn = threadIdx.x % 16, lane = threadIdx.x & 31;
    const int64_t npairs = T * G, p0 = (int64_t)blockIdx.x * S::M;
    const int64_t t_first = p0 / G;
    const int64_t t_last = (p0 + S::M - 1) / G < T - 1 ? (p0 + S::M - 1) / G : T - 1;
    const int R = (int)(t_last - t_first + 1); /* rows in this block, at most 64 */
    for (int e = threadIdx.x; e < S::M * HD; e += 256) {
        int m = e / HD, d = e % HD;
        int64_t p = p0 + m;
        Qs[m * S::QP + d] = p < npairs ? q[(p / G) * ldq + (int64_t)(g * G + p % G) * HD + d] : 0.f;
    }
    int64_t rpos[RM];
    int rrow[RM];
#pragma unroll
    for (int i = 0; i < RM; i++) {
        int64_t p = p0 + tm * RM + i;
        rpos[i] = p < npairs ? pos0 + p / G : -1;
        rrow[i] = p < npairs ? (int)(p / G - t_first) : 0;
    }
    if (threadIdx.x < 64) ptr[threadIdx.x] = 0;
    /* this split's share of the union (only decode launches split; their union is the one list). Without
     * a split the union of several rows' lists can hold more than `budget` blocks: no bound. */
    const int per = (budget + nsplit - 1) / nsplit, u0 = split * per;
    const int u1 = nsplit == 1 ? 0x7fffffff : u0 + per;
    const int64_t nkeys = pos0 + t_last + 1;
    const int64_t kstride = (int64_t)nkv * HD;
    att_state<HD, RM> st;
    st.init();
    for (int u = 0; u < u1; u++) {
        __syncthreads();
        if (threadIdx.x < 32) {
            int cand = 0x7fffffff;
            for (int r = lane; r < R; r += 32) {
                int64_t tg = (t_first + r) * nkv + g;
                if (ptr[r] < nsel[tg]) cand = min(cand, blocks[tg * budget + ptr[r]]);
            }
            for (int off = 16; off > 0; off >>= 1) cand = min(cand, __shfl_xor_sync(0xffffffffu, cand, off));
            unsigned long long mask = 0;
            for (int r = lane; r < R; r += 32) {
                int64_t tg = (t_first + r) * nkv + g;
                if (ptr[r] < nsel[tg] && blocks[tg * budget + ptr[r]] == cand) {
                    mask |= 1ull << r;
                    ptr[r]++;
                }
            }
            for (int off = 16; off > 0; off >>= 1) mask |= __shfl_xor_sync(0xffffffffu, mask, off);
            if (lane == 0) {
                cur_blk = cand;
                cur_mask = mask;
            }
        }
        __syncthreads();
        const int blk = cur_blk;
        const unsigned long long mask = cur_mask;
        if (blk == 0x7fffffff) break;
        if (u < u0) continue;
        const int64_t k0 = (int64_t)blk * ATT_BK;
        att_load_rows<HD>(KVs, K + (int64_t)g * HD, kstride, k0, nkeys);
        __syncthreads();
        float sc[RM][4];
        att_dots<HD, RM>(Qs, KVs, sc);
#pragma unroll
        for (int i = 0; i < RM; i++) {
            const bool chose = (mask >> rrow[i]) & 1ull;
#pragma unroll
            for (int j = 0; j < 4; j++)
                sc[i][j] = (chose && k0 + tn + 16 * j <= rpos[i]) ? sc[i][j] * scale : -INFINITY;
        }
        st.softmax_step(sc, Ps, true);
        __syncthreads();
        att_load_rows<HD>(KVs, V + (int64_t)g * HD, kstride, k0, nkeys);
        __syncthreads();
        st.pv(Ps, KVs);
    }
#pragma unroll
    for (int i = 0; i < RM; i++) {
        int64_t p = p0 + tm * RM + i;
        if (p >= npairs) continue;
        int64_t t = p / G, h = g * G + p % G;
        if (nsplit == 1) {
            float inv = st.l[i] > 0.f ? 1.f / st.l[i] : 0.f;
#pragma unroll
            for (int c = 0; c < HD / 16; c++) o[t * ldo + h * HD + tn + 16 * c] = st.o[i][c] * inv;
        } else {
            float *rec = part + ((int64_t)split * T * nh + t * nh + h) * (2 + HD);
            att_write_partial<HD>(rec, st.m[i], st.l[i], st.o[i], tn);
        }
    }
}

template <int HD, int RM, class KT>
static int launch_sparse(cudaStream_t st, float *o, int64_t ldo, const float *q, int64_t ldq, const void *K,
                         const void *V, const int32_t *blocks, const int32_t *nsel, int64_t T, int64_t pos0,
                         const cu_infllm_dims *d, float *scratch, int64_t scratch_floats) {
    typedef att_shape<HD, RM> S;
    size_t smem = sizeof(float) * S::SMEM_FLOATS;
    static bool attr = false;
    if (!attr) {
        cudaFuncSetAttribute(k_attn_sparse<HD, RM, KT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        attr = true;
    }
    int G = d->nh / d->nkv;
    int64_t nblk = (T * G + S::M - 1) / S::M;
    int nsplit = T == 1 ? attn_pick_split(nblk * d->nkv, d->budget, T * d->nh, HD, scratch_floats) : 1;
    dim3 grid((unsigned)nblk, d->nkv, nsplit);
    k_attn_sparse<HD, RM, KT><<<grid, 256, smem, st>>>(o, ldo, q, ldq, (const KT *)K, (const KT *)V, blocks, nsel, T,
                                                        pos0, d->nh, d->nkv, d->budget, d->scale, nsplit, scratch);
    int e = LAUNCH_CHECK();
    if (e || nsplit == 1) return e;
    return attn_combine(st, o, ldo, scratch, nsplit, T * d->nh, d->nh, HD);
}

template <int HD, class KT>
static int sparse_rm(cudaStream_t st, float *o, int64_t ldo, const float *q, int64_t ldq, const void *K, const void *V,
                     const int32_t *blocks, const int32_t *nsel, int64_t T, int64_t pos0, const cu_infllm_dims *d,
                     float *scratch, int64_t sf) {
    if (T * (d->nh / d->nkv) <= 64)
        return launch_sparse<HD, 1, KT>(st, o, ldo, q, ldq, K, V, blocks, nsel, T, pos0, d, scratch, sf);
    return launch_sparse<HD, 4, KT>(st, o, ldo, q, ldq, K, V, blocks, nsel, T, pos0, d, scratch, sf);
}

extern "C" int cu_attn_sparse(void *stream, float *o, int64_t ldo, const float *q, int64_t ldq, const void *K,
                              const void *V, cu_dtype kvt, const int32_t *blocks, const int32_t *nsel, int64_t T,
                              int64_t pos0, const cu_infllm_dims *d, float *scratch, int64_t scratch_floats) {
    cudaStream_t st = (cudaStream_t)stream;
    if (T <= 0) return 0;
    if (d->block != ATT_BK || d->nkv <= 0 || d->nh % d->nkv || d->nh / d->nkv > 64) return (int)cudaErrorInvalidValue;
    if (kvt == CU_BF16) /* tensor cores */
        return attn_mma(st, 1, o, ldo, q, ldq, K, V, blocks, nsel, T, pos0, d->nh, d->nkv, d->hd, d->budget, d->scale,
                        scratch, scratch_floats);
#define SPARSE_CASE(HD)                                                                                              \
    case HD:                                                                                                         \
        return kvt == CU_BF16 ? sparse_rm<HD, bf16>(st, o, ldo, q, ldq, K, V, blocks, nsel, T, pos0, d, scratch,     \
                                                     scratch_floats)                                                 \
                              : sparse_rm<HD, float>(st, o, ldo, q, ldq, K, V, blocks, nsel, T, pos0, d, scratch,    \
                                                     scratch_floats);
    switch (d->hd) {
        SPARSE_CASE(16)
        SPARSE_CASE(32)
        SPARSE_CASE(64)
        SPARSE_CASE(128)
    default: return (int)cudaErrorInvalidValue;
    }
#undef SPARSE_CASE
}
