/* argmax.cu — greedy sampling on the GPU: idx[r] = the first index of the largest logit of row r
 * (ties to the lower index, like the CPU sampler's argmax). One block of 1024 threads per row (a decode
 * step's 73K logits: 72 loads a thread, in flight four at a time). */
#include "cuda/common.cuh"

__global__ void k_argmax(int32_t *idx, const float *x, int64_t n) {
    const float *row = x + (int64_t)blockIdx.x * n; /* [n] */
    float best = -INFINITY;
    int64_t bi = n; /* n = none yet */
    const int64_t nt = blockDim.x;
    int64_t i = threadIdx.x;
    for (; i + 3 * nt < n; i += 4 * nt) { /* four independent loads, then the compares in index order */
        float v[4];
#pragma unroll
        for (int u = 0; u < 4; u++) v[u] = row[i + u * nt];
#pragma unroll
        for (int u = 0; u < 4; u++)
            if (v[u] > best || bi == n) best = v[u], bi = i + u * nt;
    }
    for (; i < n; i += nt)
        if (row[i] > best || bi == n) best = row[i], bi = i;
    __shared__ float sv[32];
    __shared__ int64_t si[32];
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, best, o);
        int64_t i2 = __shfl_xor_sync(0xffffffffu, bi, o);
        if (v2 > best || (v2 == best && i2 < bi)) best = v2, bi = i2;
    }
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (lane == 0) sv[w] = best, si[w] = bi;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int k = 1; k < (int)(blockDim.x >> 5); k++)
            if (sv[k] > best || (sv[k] == best && si[k] < bi)) best = sv[k], bi = si[k];
        idx[blockIdx.x] = (int32_t)(bi < n ? bi : 0);
    }
}

extern "C" int cu_argmax(void *st, int32_t *idx, const float *x, int64_t rows, int64_t n) {
    if (rows <= 0) return 0;
    k_argmax<<<(unsigned)rows, 1024, 0, (cudaStream_t)st>>>(idx, x, n);
    return LAUNCH_CHECK();
}
