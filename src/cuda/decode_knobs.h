/* decode_knobs.h — switches of the decode step's kernels that are not in kernels.h (gemv.cu,
 * lightning_decode.cu, sparse_decode.cu), for the decode step (session.cu) and its measurement
 * (tests/test_cuda_decbench.c). None changes results.
 *
 * cu_gemv_l2_next(p, bytes) applies to the next cu_gemv call only: when each of its warps has issued its last
 * weight loads, it prefetches its share of [p, p + bytes) into L2 (sm_90+: cp.async.bulk.prefetch.L2). The
 * decode step passes the o_proj weights to the w_in GEMV, meant to keep memory streaming through the mixer
 * between them. cu_gemv_l2_next_mode: 0 off (default: measured no gain, H100, dec run 2: at 1M it slows the
 * sparse chain by ~9 us a layer, at 8K it is within noise), 1 normal priority, 2 evict_last (SALA_GV_L2NEXT).
 *
 * cu_lightning_trig_early / cu_sdec_trig_early (SALA_DEC_TRIG, a mask: 1 Lightning, 2 sparse attention;
 * default 3): the fused Lightning decode kernel and the chain's attention kernel let the next kernel of the
 * stream (the o_proj GEMV) launch as soon as all their blocks run (PDL trigger at the top), so o_proj's blocks
 * start streaming their weights while the mixer still computes; 0 = trigger after the operands are read. */
#ifndef SALA_CUDA_DECODE_KNOBS_H
#define SALA_CUDA_DECODE_KNOBS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
void cu_gemv_l2_next(const void *p, int64_t bytes);
void cu_gemv_l2_next_mode(int mode);
void cu_lightning_trig_early(int on);
void cu_sdec_trig_early(int on);
int cu_dec_trig_mask(void); /* SALA_DEC_TRIG (default 3), read once */
#ifdef __cplusplus
}
#endif

#endif
