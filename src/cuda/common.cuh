/* common.cuh — helpers shared by every CUDA source of the backend (device code only, C++).
 *
 * Activations that feed a GEMM are either fp32 or bf16 (the two precisions); everything else is fp32.
 * `act_store` / `act_load` hide the difference so one kernel template serves both. Launchers return a
 * cudaError_t as int (0 = fine) so the host engine can turn failures into SALA_ERR_DEVICE. */
#ifndef SALA_CUDA_COMMON_CUH
#define SALA_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "cuda/kernels.h"

typedef __nv_bfloat16 bf16;

#define LAUNCH_CHECK() ((int)cudaGetLastError())

static __device__ __forceinline__ float to_f32(float x) { return x; }
static __device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }
template <class T> static __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float x) { return __float2bfloat16_rn(x); }

/* four consecutive elements as fp32 (16-byte fp32 or 8-byte bf16 loads; the caller checks alignment), and
 * four fp32 values stored rounded to the element type */
static __device__ __forceinline__ float4 load4(const float *p) { return *(const float4 *)p; }
static __device__ __forceinline__ float4 widen4(uint2 v) { /* 4 bf16 in 8 bytes, widened exactly */
    const float2 a = __bfloat1622float2(*(const __nv_bfloat162 *)&v.x), b = __bfloat1622float2(*(const __nv_bfloat162 *)&v.y);
    return make_float4(a.x, a.y, b.x, b.y);
}
static __device__ __forceinline__ float4 load4(const bf16 *p) { return widen4(*(const uint2 *)p); }
static __device__ __forceinline__ void store4(float *p, float4 v) { *(float4 *)p = v; }
static __device__ __forceinline__ void store4(bf16 *p, float4 v) {
    __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
    uint2 u;
    u.x = *(uint32_t *)&lo;
    u.y = *(uint32_t *)&hi;
    *(uint2 *)p = u;
}

static __device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
static __device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
static __device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result. */
static __device__ double block_sum_d(double v) {
    __shared__ double part[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads(); /* part[] may still be read by a previous call */
    if (lane == 0) part[w] = v;
    __syncthreads();
    double t = lane < nw ? part[lane] : 0.0;
    return warp_sum_d(t);
}

/* the largest power of two (≤ 256) that divides the address */
static inline int align_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    int al = 256;
    while (al > 1 && (a % al)) al >>= 1;
    return al;
}

/* a float's bits as an unsigned key with the same order (−inf lowest, +inf highest): radix selection */
static __device__ __forceinline__ uint32_t sort_key(float v) {
    uint32_t u = __float_as_uint(v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* exclusive prefix sum over the block's NT threads; *total gets the sum */
template <int NT> static __device__ int scan_block(int v, int *total) {
    __shared__ int wsum[NT / 32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int x = v;
    for (int o = 1; o < 32; o <<= 1) {
        int y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    __syncthreads();
    if (lane == 31) wsum[w] = x;
    __syncthreads();
    int base = 0, tot = 0;
    for (int i = 0; i < NT / 32; i++) {
        if (i < w) base += wsum[i];
        tot += wsum[i];
    }
    *total = tot;
    return base + x - v;
}

/* Python-style floor division for the InfLLM-v2 visibility rule (operands may be negative). */
static __device__ __host__ __forceinline__ int64_t floordiv64(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}
static __device__ __host__ __forceinline__ int64_t nwin64(int64_t N, int l, int s) { return N < l ? 0 : (N - l) / s + 1; }

/* Visible level-1 / level-2 compressed keys of row r (MODEL.md §4, the official kernel's rule, quirk
 * included); every key in a decode step. Mirrors infllm_visible() in src/cpu/ops_ref.c. */
static __device__ __host__ __forceinline__ int64_t infllm_vis(int64_t r, int64_t kv_len, int decode, int l, int s) {
    int64_t n = nwin64(kv_len, l, s);
    if (decode) return n;
    int64_t v = floordiv64(r + 1, s) - 1 + n - floordiv64(kv_len - (s - 1), s);
    return v < 0 ? 0 : v > n ? n : v;
}

#endif
