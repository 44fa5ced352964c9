/* pdl.cuh — programmatic dependent launch (PDL, sm_90+) for the decode step's kernels.
 *
 * A kernel launched by pdl_launch() may start while the kernel before it in the stream is still running:
 * its blocks take free SM slots as soon as every block of the previous kernel has passed
 * pdl_trigger() (or exited). Until pdl_wait() returns it may only read what no earlier kernel of the
 * stream writes (weights, and state that only this kernel touches), and it must not write anything:
 * pdl_wait() returns once the previous kernel has completed and its writes are visible. A decode GEMV
 * uses the gap to start streaming its weights during the previous kernel's tail, which hides the
 * launch latency and the ramp of every one of the ~130 GEMVs of a step.
 *
 * A kernel launched without the attribute (or on a GPU older than sm_90, or with SALA_CUDA_PDL=0)
 * waits for its predecessor as usual; pdl_wait() and pdl_trigger() are then no-ops. Works inside
 * stream capture (the graph keeps the programmatic edges). */
#ifndef SALA_CUDA_PDL_CUH
#define SALA_CUDA_PDL_CUH

#include <cuda_runtime.h>

static __device__ __forceinline__ void pdl_wait(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

static __device__ __forceinline__ void pdl_trigger(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* The kinds of kernels launched with PDL, a bit mask: compute capability ≥ 9 and SALA_CUDA_PDL (default all;
 * "0" none, or a number: PDL_GEMV | PDL_LIGHT | PDL_CHAIN) (gemm.cu; read once, first by cu_gemv_prepare at
 * session creation, so no query runs during a graph capture) */
enum { PDL_GEMV = 1, PDL_LIGHT = 2, PDL_CHAIN = 4, PDL_ALL = 7 };
extern "C" int cu_pdl_on(void);

/* kern<<<grid, block, smem, st>>>(args...), with programmatic stream serialization when PDL is on for `kind` */
template <typename... KArgs, typename... Args>
static int pdl_launch(int kind, void (*kern)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                      Args... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = (cu_pdl_on() & kind) ? 1 : 0;
    return (int)cudaLaunchKernelEx(&cfg, kern, ((KArgs)args)...);
}

#endif
