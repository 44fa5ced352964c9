/* util.cu — device memory, errors and fills: the small runtime surface the C side (tests, the host
 * engine) uses without including CUDA headers. */
#include "cuda/common.cuh"

extern "C" int cu_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" const char *cu_error_str(int err) { return cudaGetErrorString((cudaError_t)err); }

extern "C" const char *cu_device_name(int dev) {
    static cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, dev) != cudaSuccess) return "unknown GPU";
    return prop.name;
}

extern "C" void *cu_malloc(size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return p;
}

extern "C" void cu_free(void *p) {
    if (p) cudaFree(p);
}
extern "C" int cu_h2d(void *dst, const void *src, size_t n) { return (int)cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice); }
extern "C" int cu_d2h(void *dst, const void *src, size_t n) { return (int)cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost); }
extern "C" int cu_memset(void *p, int byte, size_t n) { return (int)cudaMemset(p, byte, n); }
extern "C" int cu_sync(void) { return (int)cudaDeviceSynchronize(); }

extern "C" int cu_mem_info(int64_t *free_b, int64_t *total_b) {
    size_t f = 0, t = 0;
    int e = (int)cudaMemGetInfo(&f, &t);
    *free_b = (int64_t)f;
    *total_b = (int64_t)t;
    return e;
}

extern "C" int cu_sm_count(void) { /* asked once: the launchers size their grids with it */
    static int sms = 0;
    if (!sms) {
        int dev = 0, n = 0;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev);
        sms = n > 0 ? n : 1;
    }
    return sms;
}

/* splitmix64 of (seed, i): independent of the launch shape, so a synthetic model is reproducible */
static __device__ __forceinline__ uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

__global__ void k_fill_uniform_bf16(bf16 *w, int64_t n, uint64_t seed, float scale) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        uint64_t h = mix64(seed * 0x100000001b3ull ^ (uint64_t)i);
        float u = (float)(h >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f; /* [-1, 1) */
        w[i] = __float2bfloat16_rn(u * scale);
    }
}

__global__ void k_fill_f32(float *p, int64_t n, float v) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        p[i] = v;
}

__global__ void k_f32_to_bf16(bf16 *y, const float *x, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16_rn(x[i]);
}

static int grid_for(int64_t n) {
    int64_t b = (n + 255) / 256;
    return (int)(b < 65536 ? (b > 0 ? b : 1) : 65536);
}

extern "C" int cu_fill_uniform_bf16(void *st, uint16_t *w, int64_t n, uint64_t seed, float scale) {
    k_fill_uniform_bf16<<<grid_for(n), 256, 0, (cudaStream_t)st>>>((bf16 *)w, n, seed, scale);
    return LAUNCH_CHECK();
}

extern "C" int cu_fill_f32(void *st, float *p, int64_t n, float v) {
    k_fill_f32<<<grid_for(n), 256, 0, (cudaStream_t)st>>>(p, n, v);
    return LAUNCH_CHECK();
}

extern "C" int cu_f32_to_bf16(void *st, uint16_t *y, const float *x, int64_t n) {
    k_f32_to_bf16<<<grid_for(n), 256, 0, (cudaStream_t)st>>>((bf16 *)y, x, n);
    return LAUNCH_CHECK();
}
