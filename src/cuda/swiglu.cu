/* swiglu.cu — h = silu(g) ⊙ u from the fused gate|up GEMM output gu[rows, 2I] (g = gu[:, :I], u = gu[:, I:]).
 * Same formula as op_swiglu: g / (1 + exp(-g)) · u, in fp32 whatever the dtype of gu (fp32, or bf16 when
 * the GEMM wrote bf16).
 *
 * Prefill moves rows·I·(8 + 2..4) bytes per layer, so the kernel must run at memory bandwidth: when I is a
 * multiple of 4 each thread takes 4 consecutive columns of one row (two 16-byte loads, one 8- or 16-byte
 * store) and the row comes from the grid, not from a 64-bit division per element; otherwise one element per
 * thread. Both give the same bits. */
#include "cuda/common.cuh"

template <class HT, class GT> __global__ void k_swiglu(HT *h, const GT *gu, int64_t rows, int I) {
    int64_t n = rows * I;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = e / I, i = e % I;
        float g = to_f32(gu[r * 2 * I + i]), u = to_f32(gu[r * 2 * I + I + i]);
        h[e] = from_f32<HT>(g / (1.0f + expf(-g)) * u);
    }
}

/* I % 4 == 0: grid.x covers the I/4 column quads of a row, grid.y strides over the rows */
template <class HT, class GT> __global__ void k_swiglu4(HT *h, const GT *gu, int64_t rows, int I) {
    const int i = 4 * (blockIdx.x * blockDim.x + threadIdx.x);
    if (i >= I) return;
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const float4 g = load4(gu + r * 2 * I + i), u = load4(gu + r * 2 * I + I + i);
        store4(h + r * I + i, make_float4(g.x / (1.0f + expf(-g.x)) * u.x, g.y / (1.0f + expf(-g.y)) * u.y,
                                          g.z / (1.0f + expf(-g.z)) * u.z, g.w / (1.0f + expf(-g.w)) * u.w));
    }
}

template <class HT, class GT> static int swiglu_t(cudaStream_t s, HT *h, const GT *gu, int64_t rows, int I) {
    const int64_t n = rows * I;
    /* the quad path needs 16-byte (8-byte for bf16) aligned quads of gu and 8/16-byte aligned quads of h */
    if (I % 4 == 0 && ((uintptr_t)gu % (4 * sizeof(GT))) == 0 && ((uintptr_t)h % (4 * sizeof(HT))) == 0) {
        dim3 grid((unsigned)((I / 4 + 255) / 256), (unsigned)(rows < 65535 ? rows : 65535));
        k_swiglu4<HT, GT><<<grid, 256, 0, s>>>(h, gu, rows, I);
    } else {
        int blocks = (int)((n + 255) / 256 < 65536 ? (n + 255) / 256 : 65536);
        k_swiglu<HT, GT><<<blocks, 256, 0, s>>>(h, gu, rows, I);
    }
    return LAUNCH_CHECK();
}

extern "C" int cu_swiglu(void *st, void *h, cu_dtype ht, const void *gu, cu_dtype gt, int64_t rows, int I) {
    if (rows * I <= 0) return 0;
    cudaStream_t s = (cudaStream_t)st;
    if (gt == CU_BF16) {
        if (ht == CU_BF16) return swiglu_t(s, (bf16 *)h, (const bf16 *)gu, rows, I);
        return swiglu_t(s, (float *)h, (const bf16 *)gu, rows, I);
    }
    if (ht == CU_BF16) return swiglu_t(s, (bf16 *)h, (const float *)gu, rows, I);
    return swiglu_t(s, (float *)h, (const float *)gu, rows, I);
}
