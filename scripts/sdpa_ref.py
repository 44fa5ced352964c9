#!/usr/bin/env python3
"""sdpa_ref.py — PyTorch's scaled_dot_product_attention (flash backend), causal, on the GPU machine: the
reference that sala's dense attention kernel is compared with (docs/PERF.md).

One layer's attention of a causal prefill of N tokens: 32 query heads over 2 KV heads (GQA, the K/V heads
repeated to 32 as the flash backend takes them), head dim 128, bf16. Prints the time per layer (mean of
--reps timed calls after warm-up, CUDA events) and the rate in TFLOP/s counting 4·N²·d·H/2 (causal half).

usage: python3 scripts/sdpa_ref.py [--ctx 131072] [--heads 32] [--kv 2] [--hd 128] [--reps 5]
"""
import argparse

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctx", type=int, default=131072)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv", type=int, default=2)
    ap.add_argument("--hd", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    n, h, d = a.ctx, a.heads, a.hd
    g = torch.Generator(device="cuda").manual_seed(1)
    q = torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(1, a.kv, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(1, a.kv, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
    k = k.repeat_interleave(h // a.kv, dim=1)
    v = v.repeat_interleave(h // a.kv, dim=1)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        for _ in range(2):
            F.scaled_dot_product_attention(q, k, v, is_causal=True)
        torch.cuda.synchronize()
        t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0.record()
        for _ in range(a.reps):
            F.scaled_dot_product_attention(q, k, v, is_causal=True)
        t1.record()
        torch.cuda.synchronize()
    ms = t0.elapsed_time(t1) / a.reps
    flop = 4.0 * n * n * d * h / 2
    print(f"sdpa flash causal N={n} heads={h}/{a.kv} hd={d} bf16: {ms:.2f} ms per layer, "
          f"{flop / ms / 1e9:.1f} TFLOP/s ({torch.cuda.get_device_name()}, torch {torch.__version__})")


if __name__ == "__main__":
    main()
