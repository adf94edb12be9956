"""The speed of light for the 3D ResNet-18 on this machine: FLOPs per volume against the sgemm throughput.

    python benchmarks/bench_ceiling.py [--grid 121,128,121] [--width 64] [--threads 2]

Counts the floating-point operations of one volume through the encoder (inference) and through the whole
model with backward (a training step's work per view), with `torch.utils.flop_counter`, and measures the
best fp32 matrix-multiply throughput that torch reaches here (4096 x 4096 sgemm). Their ratio is the most
volumes/s any fp32 implementation can reach, so it bounds every speed-up against the plain loop measured by
`bench_pretrain.py` (see benchmarks/RESULTS.md).
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from anatcl_core.encoder import AnatCLModel


def flops_per_volume(grid: tuple[int, int, int], width: int = 64) -> tuple[float, float]:
    """(inference, training forward + backward) FLOPs for one [1, 1, *grid] volume through a ResNet-18 of `width`."""
    model = AnatCLModel(width=width)
    x = torch.randn(1, 1, *grid)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval().embed(x)
    inference = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        model.train()(x).sum().backward()
    return float(inference), float(counter.get_total_flops())


def sgemm_gflops(n: int = 4096, repeats: int = 7) -> float:
    """Best fp32 matmul throughput (GFLOP/s) over `repeats` n x n products."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="121,128,121", help="X,Y,Z of the (cropped) input volume")
    parser.add_argument("--width", type=int, default=64, help="encoder width (64: the paper's ResNet-18)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    grid = tuple(int(s) for s in args.grid.split(","))
    inference, training = flops_per_volume(grid, args.width)
    peak = sgemm_gflops()
    print(f"grid {grid}, width {args.width}, torch {torch.__version__}, {args.threads} threads, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"inference: {inference / 1e9:.1f} GFLOP per volume; training (forward + backward): "
          f"{training / 1e9:.1f} GFLOP per view")
    print(f"fp32 sgemm: {peak:.0f} GFLOP/s -> at most {peak * 1e9 / inference:.2f} volumes/s embedding, "
          f"{peak * 1e9 / training:.2f} views/s training")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
