/* attn_dense.cu — causal attention, GQA, no position encoding: the sparse layers below dense_len, and
 * every layer of the `--arch full` benchmark model.
 *
 * A block takes 16·RM consecutive (row, head-of-group) pairs of one KV group g, so the G query heads that
 * share a KV head read each key tile once; row t sits at position pos0 + t and sees keys 0..pos0+t.
 * Decode-sized launches (few pairs) use RM = 1 and split the key range (attn_core.cuh). These are the fp32
 * kernels of the exact mode; bf16 caches go to the tensor-core kernel (attn_mma.cu). */
#include "cuda/attn_core.cuh"
#include "cuda/attn_internal.cuh"

template <int HD, int RM, class KT>
__global__ void __launch_bounds__(256) k_attn_dense(float *o, int64_t ldo, const float *q, int64_t ldq, const KT *K,
                                                    const KT *V, int64_t T, int64_t pos0, int nh, int nkv, float scale,
                                                    int nsplit, float *part) {
    typedef att_shape<HD, RM> S;
    extern __shared__ float4 smem_f4[];
    float *Qs = (float *)smem_f4, *KVs = Qs + S::M * S::QP, *Ps = KVs + ATT_BK * S::QP;
    const int g = blockIdx.y, split = blockIdx.z, G = nh / nkv;
    const int tm = threadIdx.x / 16, tn = threadIdx.x % 16;
    const int64_t npairs = T * G, p0 = (int64_t)blockIdx.x * S::M;
    const int64_t t_last = (p0 + S::M - 1) / G < T - 1 ? (p0 + S::M - 1) / G : T - 1;
    /* query vectors */
    for (int e = threadIdx.x; e < S::M * HD; e += 256) {
        int m = e / HD, d = e % HD;
        int64_t p = p0 + m;
        float val = 0.f;
        if (p < npairs) val = q[(p / G) * ldq + (int64_t)(g * G + p % G) * HD + d];
        Qs[m * S::QP + d] = val;
    }
    int64_t rpos[RM];
#pragma unroll
    for (int i = 0; i < RM; i++) {
        int64_t p = p0 + tm * RM + i;
        rpos[i] = p < npairs ? pos0 + p / G : -1; /* -1: padding vector, sees nothing */
    }
    const int64_t nkeys = pos0 + t_last + 1;
    const int64_t ntiles = (nkeys + ATT_BK - 1) / ATT_BK;
    const int64_t tps = (ntiles + nsplit - 1) / nsplit;
    const int64_t kt0 = split * tps, kt1 = kt0 + tps < ntiles ? kt0 + tps : ntiles;
    const int64_t kstride = (int64_t)nkv * HD;
    att_state<HD, RM> st;
    st.init();
    for (int64_t kt = kt0; kt < kt1; kt++) {
        const int64_t k0 = kt * ATT_BK;
        __syncthreads();
        att_load_rows<HD>(KVs, K + (int64_t)g * HD, kstride, k0, nkeys);
        __syncthreads();
        float sc[RM][4];
        att_dots<HD, RM>(Qs, KVs, sc);
#pragma unroll
        for (int i = 0; i < RM; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) sc[i][j] = (k0 + tn + 16 * j <= rpos[i]) ? sc[i][j] * scale : -INFINITY;
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
static int launch_dense(cudaStream_t st, float *o, int64_t ldo, const float *q, int64_t ldq, const void *K,
                        const void *V, int64_t T, int64_t pos0, int nh, int nkv, float scale, float *scratch,
                        int64_t scratch_floats) {
    typedef att_shape<HD, RM> S;
    size_t smem = sizeof(float) * S::SMEM_FLOATS;
    static bool attr = false;
    if (!attr) {
        cudaFuncSetAttribute(k_attn_dense<HD, RM, KT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        attr = true;
    }
    int G = nh / nkv;
    int64_t nblk = (T * G + S::M - 1) / S::M;
    int64_t ntiles = (pos0 + T + ATT_BK - 1) / ATT_BK;
    int nsplit = attn_pick_split(nblk * nkv, ntiles, T * nh, HD, scratch_floats);
    dim3 grid((unsigned)nblk, nkv, nsplit);
    k_attn_dense<HD, RM, KT><<<grid, 256, smem, st>>>(o, ldo, q, ldq, (const KT *)K, (const KT *)V, T, pos0, nh, nkv,
                                                       scale, nsplit, scratch);
    int e = LAUNCH_CHECK();
    if (e || nsplit == 1) return e;
    return attn_combine(st, o, ldo, scratch, nsplit, T * nh, nh, HD);
}

template <int HD, class KT>
static int dense_rm(cudaStream_t st, float *o, int64_t ldo, const float *q, int64_t ldq, const void *K, const void *V,
                    int64_t T, int64_t pos0, int nh, int nkv, float scale, float *scratch, int64_t sf) {
    if (T * (nh / nkv) <= 64)
        return launch_dense<HD, 1, KT>(st, o, ldo, q, ldq, K, V, T, pos0, nh, nkv, scale, scratch, sf);
    return launch_dense<HD, 4, KT>(st, o, ldo, q, ldq, K, V, T, pos0, nh, nkv, scale, scratch, sf);
}

extern "C" int cu_attn_dense(void *stream, float *o, int64_t ldo, const float *q, int64_t ldq, const void *K,
                             const void *V, cu_dtype kvt, int64_t T, int64_t pos0, int nh, int nkv, int hd, float scale,
                             float *scratch, int64_t scratch_floats) {
    cudaStream_t st = (cudaStream_t)stream;
    if (T <= 0) return 0;
    if (nkv <= 0 || nh % nkv) return (int)cudaErrorInvalidValue;
    if (kvt == CU_BF16) /* tensor cores */
        return attn_mma(st, 0, o, ldo, q, ldq, K, V, NULL, NULL, T, pos0, nh, nkv, hd, 0, scale, scratch, scratch_floats);
#define DENSE_CASE(HD)                                                                                             \
    case HD:                                                                                                       \
        return kvt == CU_BF16                                                                                      \
                   ? dense_rm<HD, bf16>(st, o, ldo, q, ldq, K, V, T, pos0, nh, nkv, scale, scratch, scratch_floats) \
                   : dense_rm<HD, float>(st, o, ldo, q, ldq, K, V, T, pos0, nh, nkv, scale, scratch, scratch_floats);
    switch (hd) {
        DENSE_CASE(16)
        DENSE_CASE(32)
        DENSE_CASE(64)
        DENSE_CASE(128)
    default: return (int)cudaErrorInvalidValue;
    }
#undef DENSE_CASE
}
