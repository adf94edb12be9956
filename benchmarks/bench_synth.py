"""Synthetic cohort generation: subjects per second and peak memory for growing N, at 3 mm and 1.5 mm.

Each configuration runs in a fresh Python process, so its memory figures are its own:
  peak heap      tracemalloc peak during generation (numpy buffers included): what the generator allocates
  peak RSS       ru_maxrss; it also counts the pages of vbm.npy mapped by the writer's memmap, which are
                 file-backed page cache the kernel can write back and drop, so it grows with N
  anon RSS       RssAnon at the end (/proc/self/status): anonymous memory actually held

    python benchmarks/bench_synth.py                      # default grid, prints a Markdown table
    python benchmarks/bench_synth.py --sizes 3:50,200 1.5:20,80
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc


def measure(voxel_size: float, n_subjects: int, cohort: str) -> dict:
    """Generate one cohort in a temporary folder -> timings (s), throughput and peak RSS (MiB)."""
    from anatcl_core.data.synthetic import write_synthetic_cohort
    from anatcl_core.data.synthetic.templates import load_templates

    start = time.perf_counter()
    load_templates(voxel_size)
    templates_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as root:
        tracemalloc.start()
        start = time.perf_counter()
        write_synthetic_cohort(root, cohort, n_subjects, voxel_size=voxel_size, seed=0, progress=False)
        generate_s = time.perf_counter() - start
        heap_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return {"voxel_size": voxel_size, "n": n_subjects, "templates_s": round(templates_s, 2),
            "generate_s": round(generate_s, 2), "subjects_per_s": round(n_subjects / generate_s, 2),
            "peak_heap_mib": round(heap_peak / 2**20, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "anon_rss_mib": round(anonymous_rss_kib() / 1024, 1)}


def anonymous_rss_kib() -> float:
    """RssAnon of this process (KiB), or NaN where /proc is absent."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            return next(float(line.split()[1]) for line in status if line.startswith("RssAnon:"))
    except (OSError, StopIteration):
        return float("nan")


def parse_sizes(items: list[str]) -> list[tuple[float, int]]:
    """['3:50,200', '1.5:20'] -> [(3.0, 50), (3.0, 200), (1.5, 20)]."""
    return [(float(v), int(n)) for item in items for v, ns in [item.split(":")] for n in ns.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["3:50,200,800", "1.5:20,80,320"],
                        help="VOXEL:N,N,... configurations")
    parser.add_argument("--cohort", default="openbhb")
    parser.add_argument("--one", nargs=2, metavar=("VOXEL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(float(args.one[0]), int(args.one[1]), args.cohort)))
        return
    print("| grid | N | templates (s) | generation (s) | subjects/s | peak heap (MiB) | peak RSS (MiB) | anon RSS (MiB) |")
    print("|---|---|---|---|---|---|---|---|")
    for voxel_size, n in parse_sizes(args.sizes):
        out = subprocess.run([sys.executable, __file__, "--cohort", args.cohort, "--one", str(voxel_size), str(n)],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {r['voxel_size']:g} mm | {r['n']} | {r['templates_s']} | {r['generate_s']} | "
              f"{r['subjects_per_s']} | {r['peak_heap_mib']} | {r['peak_rss_mib']} | {r['anon_rss_mib']} |", flush=True)


if __name__ == "__main__":
    main()
