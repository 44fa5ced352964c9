/* decode_knobs.h — switches of the decode step's kernels that are not in kernels.h (lightning_decode.cu,
 * sparse_decode.cu), for measurements (tests/test_cuda_decbench.c). None changes results.
 *
 * Early PDL trigger: the kernel lets the next kernel of the stream (the o_proj GEMV) launch as soon as all its
 * blocks run (griddepcontrol.launch_dependents at the top, before its own wait), so o_proj's blocks start
 * streaming their first weights while the mixer still waits and computes; off = trigger after the operands
 * are read (the earlier behaviour). SALA_DEC_TRIG, a mask read once: 1 the fused Lightning decode kernel,
 * 2 the InfLLM-v2 chain's attention kernel, 4 the chain's LSE kernel (its successor, stage 1, then streams the
 * level-1 keys while the append and the LSE run); default 1. Measured (H100, dec run 3, synthetic step of
 * tests/test_cuda_decbench.c): Lightning early 7.448 -> 7.381 ms at 1M, 7.235 -> 7.168 ms at 8K; attention
 * early +4.6 us per sparse layer at 1M (o_proj's blocks take the SMs the chain's last kernels need); the LSE
 * early 76.1 against 72.1 us per sparse layer at 1M (round 7: stage 1's stream then competes with the LSE's). */
#ifndef SALA_CUDA_DECODE_KNOBS_H
#define SALA_CUDA_DECODE_KNOBS_H

#ifdef __cplusplus
extern "C" {
#endif
void cu_lightning_trig_early(int on);
void cu_sdec_trig_early(int on);
int cu_dec_trig_mask(void); /* SALA_DEC_TRIG (default 1) */
#ifdef __cplusplus
}
#endif

#endif
