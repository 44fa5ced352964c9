/* embed.cu — x[T, H] = E[ids] · scale_emb, fp32 out of the bf16 table (MODEL.md §3, first line).
 * The host validated the ids against the vocabulary before they were uploaded. */
#include "cuda/common.cuh"

__global__ void k_embed(float *x, const bf16 *E, const int32_t *ids, int H, float scale) {
    int64_t t = blockIdx.x;
    const bf16 *row = E + (int64_t)ids[t] * H; /* [H] */
    float *xt = x + t * H;
    for (int i = threadIdx.x; i < H; i += blockDim.x) xt[i] = __bfloat162float(row[i]) * scale;
}

extern "C" int cu_embed(void *st, float *x, const uint16_t *E, const int32_t *ids, int64_t T, int H, float scale) {
    if (T <= 0) return 0;
    k_embed<<<(unsigned)T, 256, 0, (cudaStream_t)st>>>(x, (const bf16 *)E, ids, H, scale);
    return LAUNCH_CHECK();
}
