/* attn_combine.cu — merge split-KV partial results (see attn_core.cuh): for each query vector,
 * M = max_s m_s, w_s = exp(m_s − M); o = Σ w_s o_s / Σ w_s l_s, or (hd = 0, InfLLM-v2's LSE)
 * lse = M + log Σ w_s l_s. part: [nsplit][nvec][2 + hd]; vector v is written to out[v / nh · ldo + v % nh · hd]. */
#include "cuda/common.cuh"
#include "cuda/attn_internal.cuh"

__global__ void k_attn_combine(float *out, int64_t ldo, const float *part, int nsplit, int64_t nvec, int nh, int hd) {
    int64_t vec = blockIdx.x;
    int64_t rec = 2 + hd;
    float M = -INFINITY;
    for (int s = 0; s < nsplit; s++) {
        const float *p = part + ((int64_t)s * nvec + vec) * rec;
        if (p[1] > 0.f) M = fmaxf(M, p[0]);
    }
    int64_t t = vec / nh, h = vec % nh;
    if (hd == 0) {
        if (threadIdx.x == 0) {
            float L = 0.f;
            for (int s = 0; s < nsplit; s++) {
                const float *p = part + ((int64_t)s * nvec + vec) * rec;
                if (p[1] > 0.f) L += p[1] * expf(p[0] - M);
            }
            out[t * ldo + h] = L > 0.f ? M + logf(L) : -INFINITY;
        }
        return;
    }
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float L = 0.f, acc = 0.f;
        for (int s = 0; s < nsplit; s++) {
            const float *p = part + ((int64_t)s * nvec + vec) * rec;
            if (p[1] > 0.f) {
                float w = expf(p[0] - M);
                L += p[1] * w;
                acc += p[2 + c] * w;
            }
        }
        out[t * ldo + h * hd + c] = L > 0.f ? acc / L : 0.f;
    }
}

int attn_combine(cudaStream_t st, float *out, int64_t ldo, const float *part, int nsplit, int64_t nvec, int nh, int hd) {
    k_attn_combine<<<(unsigned)nvec, hd > 0 ? (hd < 128 ? hd : 128) : 32, 0, st>>>(out, ldo, part, nsplit, nvec, nh, hd);
    return LAUNCH_CHECK();
}

/* Number of key splits for a launch of `blocks` query tiles over `ntiles` key tiles: enough blocks for
 * two waves of the GPU, bounded by the tiles and by the scratch space for partial records. */
int attn_pick_split(int64_t blocks, int64_t ntiles, int64_t nvec, int hd, int64_t scratch_floats) {
    const int sms = cu_sm_count();
    if (scratch_floats <= 0 || blocks >= sms || ntiles < 4) return 1;
    int64_t want = (2 * sms + blocks - 1) / blocks;
    if (want > ntiles / 2) want = ntiles / 2;
    int64_t cap = scratch_floats / (nvec * (2 + hd));
    if (want > cap) want = cap;
    if (want > 1024) want = 1024;
    return want > 1 ? (int)want : 1;
}
