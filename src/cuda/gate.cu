/* gate.cu — the mixers' output gates: y = RMSNorm(o; w) ⊙ sigmoid(z).
 *
 * Lightning layers normalise their attention output over all nh·hd channels at once (one norm, not
 * per head) and gate it with sigmoid(z_proj(a)); sparse layers only gate, with sigmoid(o_gate(a)) (w =
 * NULL). z is read in place from the fused projection output (row stride ldz; fp32, or bf16 when that
 * GEMM wrote bf16). y feeds the o_proj GEMM. Rows of a multiple of 4 elements with aligned operands take
 * four elements at a time (k_norm_gate4; k_norm_gate_r with the row in registers when D is a multiple of
 * 512), others one at a time; all give the same bits. */
#include "cuda/common.cuh"

template <class YT, class ZT>
__global__ void k_norm_gate(YT *y, int64_t ldy, const float *o, int64_t ldo, const ZT *z, int64_t ldz,
                            const float *w, int D, float eps) {
    int64_t r = blockIdx.x;
    const float *orow = o + r * ldo; /* [D] */
    float inv = 1.0f;
    if (w) {
        double ss = 0;
        for (int i = threadIdx.x; i < D; i += blockDim.x) ss += (double)orow[i] * orow[i];
        ss = block_sum_d(ss);
        inv = (float)(1.0 / sqrt(ss / D + eps));
    }
    YT *yr = y + r * ldy;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float v = orow[i];
        if (w) v = v * inv * w[i];
        if (z) v *= 1.0f / (1.0f + expf(-to_f32(z[r * ldz + i])));
        yr[i] = from_f32<YT>(v);
    }
}

template <class YT, class ZT>
__global__ void k_norm_gate4(YT *y, int64_t ldy, const float *o, int64_t ldo, const ZT *z, int64_t ldz,
                             const float *w, int D, float eps) {
    const int64_t r = blockIdx.x;
    const float *orow = o + r * ldo; /* [D] */
    float inv = 1.0f;
    if (w) {
        double ss = 0;
        for (int i = 4 * threadIdx.x; i < D; i += 4 * blockDim.x) {
            const float4 v = load4(orow + i);
            ss += (double)v.x * v.x + (double)v.y * v.y + (double)v.z * v.z + (double)v.w * v.w;
        }
        ss = block_sum_d(ss);
        inv = (float)(1.0 / sqrt(ss / D + eps));
    }
    YT *yr = y + r * ldy;
    for (int i = 4 * threadIdx.x; i < D; i += 4 * blockDim.x) {
        float4 v = load4(orow + i);
        if (w) {
            const float4 g = load4(w + i);
            v = make_float4(v.x * inv * g.x, v.y * inv * g.y, v.z * inv * g.z, v.w * inv * g.w);
        }
        if (z) {
            const float4 zz = load4(z + r * ldz + i);
            v.x *= 1.0f / (1.0f + expf(-zz.x)), v.y *= 1.0f / (1.0f + expf(-zz.y));
            v.z *= 1.0f / (1.0f + expf(-zz.z)), v.w *= 1.0f / (1.0f + expf(-zz.w));
        }
        store4(yr + i, v);
    }
}

/* the same with the row of o held in registers: D = 16 · blockDim.x, four float4 groups per thread loaded up
 * front (o read once); same sums in the same order as k_norm_gate4, so the same bits */
template <class YT, class ZT>
__global__ void k_norm_gate_r(YT *y, int64_t ldy, const float *o, int64_t ldo, const ZT *z, int64_t ldz,
                              const float *w, float eps) {
    const int64_t r = blockIdx.x;
    const int D = 16 * blockDim.x;
    const float *orow = o + r * ldo; /* [D] */
    float4 v[4], zz[4];
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const int i = 4 * (threadIdx.x + k * blockDim.x);
        v[k] = load4(orow + i);
        if (z) zz[k] = load4(z + r * ldz + i);
    }
    float inv = 1.0f;
    if (w) {
        double ss = 0;
#pragma unroll
        for (int k = 0; k < 4; k++)
            ss += (double)v[k].x * v[k].x + (double)v[k].y * v[k].y + (double)v[k].z * v[k].z + (double)v[k].w * v[k].w;
        ss = block_sum_d(ss);
        inv = (float)(1.0 / sqrt(ss / D + eps));
    }
    YT *yr = y + r * ldy;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const int i = 4 * (threadIdx.x + k * blockDim.x);
        float4 u = v[k];
        if (w) {
            const float4 g = load4(w + i);
            u = make_float4(u.x * inv * g.x, u.y * inv * g.y, u.z * inv * g.z, u.w * inv * g.w);
        }
        if (z) {
            u.x *= 1.0f / (1.0f + expf(-zz[k].x)), u.y *= 1.0f / (1.0f + expf(-zz[k].y));
            u.z *= 1.0f / (1.0f + expf(-zz[k].z)), u.w *= 1.0f / (1.0f + expf(-zz[k].w));
        }
        store4(yr + i, u);
    }
}

template <class ZT>
static int norm_gate_t(cudaStream_t st, void *y, cu_dtype yt, int64_t ldy, const float *o, int64_t ldo, const ZT *z,
                       int64_t ldz, const float *w, int64_t rows, int D, float eps) {
    const int ys = yt == CU_BF16 ? 2 : 4;
    if (D % 4 == 0 && ldo % 4 == 0 && ldy % 4 == 0 && align_of(o) >= 16 && align_of(y) >= 4 * ys &&
        (!w || align_of(w) >= 16) && (!z || (ldz % 4 == 0 && align_of(z) >= 4 * (int)sizeof(ZT)))) {
        if (D % 512 == 0 && D <= 16384) { /* 32..1024 threads of 16 elements */
            if (yt == CU_BF16)
                k_norm_gate_r<bf16, ZT><<<(unsigned)rows, D / 16, 0, st>>>((bf16 *)y, ldy, o, ldo, z, ldz, w, eps);
            else
                k_norm_gate_r<float, ZT><<<(unsigned)rows, D / 16, 0, st>>>((float *)y, ldy, o, ldo, z, ldz, w, eps);
            return LAUNCH_CHECK();
        }
        const int threads = D >= 2048 ? 256 : D >= 512 ? 128 : 32;
        if (yt == CU_BF16)
            k_norm_gate4<bf16, ZT><<<(unsigned)rows, threads, 0, st>>>((bf16 *)y, ldy, o, ldo, z, ldz, w, D, eps);
        else
            k_norm_gate4<float, ZT><<<(unsigned)rows, threads, 0, st>>>((float *)y, ldy, o, ldo, z, ldz, w, D, eps);
        return LAUNCH_CHECK();
    }
    int threads = D >= 1024 ? 512 : D >= 256 ? 256 : 64;
    if (yt == CU_BF16)
        k_norm_gate<bf16, ZT><<<(unsigned)rows, threads, 0, st>>>((bf16 *)y, ldy, o, ldo, z, ldz, w, D, eps);
    else
        k_norm_gate<float, ZT><<<(unsigned)rows, threads, 0, st>>>((float *)y, ldy, o, ldo, z, ldz, w, D, eps);
    return LAUNCH_CHECK();
}

extern "C" int cu_norm_gate(void *st, void *y, cu_dtype yt, int64_t ldy, const float *o, int64_t ldo, const void *z,
                            cu_dtype zt, int64_t ldz, const float *w, int64_t rows, int D, float eps) {
    if (rows <= 0) return 0;
    if (zt == CU_BF16)
        return norm_gate_t((cudaStream_t)st, y, yt, ldy, o, ldo, (const bf16 *)z, ldz, w, rows, D, eps);
    return norm_gate_t((cudaStream_t)st, y, yt, ldy, o, ldo, (const float *)z, ldz, w, rows, D, eps);
}
