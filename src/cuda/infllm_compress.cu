/* infllm_compress.cu — InfLLM-v2 compressed keys (MODEL.md §4 step 1):
 *     C[j, g, :] = mean(K[s·j .. s·j + l − 1, g, :])  for windows j in [j0, j1)
 * summed in fp32 in key order and divided by l, exactly as op_compress_keys: a window gives the same
 * bits whenever it is computed, so growing the caches a window at a time equals recomputing them. */
#include "cuda/common.cuh"

template <class KT>
__global__ void k_compress(KT *C, const KT *K, int64_t j0, int64_t j1, int l, int s, int nkv, int hd) {
    int64_t n = (j1 - j0) * nkv * hd;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t j = j0 + e / ((int64_t)nkv * hd);
        int64_t gi = e % ((int64_t)nkv * hd); /* g * hd + i */
        float acc = 0.f;
        for (int64_t t = j * s; t < j * s + l; t++) acc += to_f32(K[t * nkv * hd + gi]);
        C[j * nkv * hd + gi] = from_f32<KT>(acc / (float)l);
    }
}

extern "C" int cu_infllm_compress(void *st, void *C, const void *K, cu_dtype kvt, int64_t j0, int64_t j1, int l, int s,
                                  int nkv, int hd) {
    int64_t n = (j1 - j0) * nkv * hd;
    if (n <= 0) return 0;
    int blocks = (int)((n + 255) / 256 < 65536 ? (n + 255) / 256 : 65536);
    if (kvt == CU_BF16)
        k_compress<bf16><<<blocks, 256, 0, (cudaStream_t)st>>>((bf16 *)C, (const bf16 *)K, j0, j1, l, s, nkv, hd);
    else
        k_compress<float><<<blocks, 256, 0, (cudaStream_t)st>>>((float *)C, (const float *)K, j0, j1, l, s, nkv, hd);
    return LAUNCH_CHECK();
}
