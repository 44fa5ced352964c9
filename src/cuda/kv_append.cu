/* kv_append.cu — write a chunk's keys and values (from the fused projection output) into the sparse
 * layer's cache rows pos0.., converting to the cache's element type (bf16 in the default precision). */
#include "cuda/common.cuh"

template <class KT>
__global__ void k_kv_append(KT *K, KT *V, const float *k, const float *v, int64_t ld, int64_t T, int64_t pos0, int kvd) {
    int64_t n = T * kvd;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t t = e / kvd, c = e % kvd;
        int64_t dst = (pos0 + t) * kvd + c;
        K[dst] = from_f32<KT>(k[t * ld + c]);
        V[dst] = from_f32<KT>(v[t * ld + c]);
    }
}

extern "C" int cu_kv_append(void *st, void *K, void *V, cu_dtype kvt, const float *k, const float *v, int64_t ld,
                            int64_t T, int64_t pos0, int kvd) {
    int64_t n = T * kvd;
    if (n <= 0) return 0;
    int blocks = (int)((n + 255) / 256 < 65536 ? (n + 255) / 256 : 65536);
    if (kvt == CU_BF16)
        k_kv_append<bf16><<<blocks, 256, 0, (cudaStream_t)st>>>((bf16 *)K, (bf16 *)V, k, v, ld, T, pos0, kvd);
    else
        k_kv_append<float><<<blocks, 256, 0, (cudaStream_t)st>>>((float *)K, (float *)V, k, v, ld, T, pos0, kvd);
    return LAUNCH_CHECK();
}
