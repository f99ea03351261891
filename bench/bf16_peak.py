"""The CPU's bfloat16 multiply-add peak: the most a bf16 convolution pass could reach here.

    python bench/bf16_peak.py [--threads N]

A loop of independent AVX512-BF16 dot products (``vdpbf16ps`` on 512-bit registers: 32
products and their sums per instruction; 12 accumulators per thread, so no instruction waits
for another, and no memory traffic), compiled with the system C compiler (``$CC``, default
``cc``) and run on 1 to N OpenMP threads (default: the cores this process may use). GFLOP/s
counts each product and each sum, as convolution rates are counted (2 x MACs). On a CPU with
``avx512_bf16`` and no AMX, oneDNN's bf16 convolutions run on this instruction, so a pass's rate
(``bench/onednn_kernels.py --time-weights``) over this figure says how close it is to the chip.
AMX tiles multiply faster than this; on such a CPU it is not the convolutions' ceiling.

A benchmark, not a test. Measurements: docs/speed.md.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.fused import compile_c
from backend.onednn import cpu_bf16_flags

SOURCE = r"""
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    long iters = atol(argv[1]);
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        float sink = 0;
        double start = omp_get_wtime();
        #pragma omp parallel reduction(+:sink)
        {
            __m512 acc[12];
            for (int i = 0; i < 12; i++) acc[i] = _mm512_setzero_ps();
            __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3c00);
            for (long k = 0; k < iters; k++) {
                #pragma GCC unroll 12
                for (int i = 0; i < 12; i++) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
                __asm__ volatile("" : "+v"(a), "+v"(b));  /* keep the loop from being folded */
            }
            __m512 s = acc[0];
            for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, acc[i]);
            sink += _mm512_reduce_add_ps(s);
        }
        double seconds = omp_get_wtime() - start;
        double flops = (double)omp_get_max_threads() * iters * 12 * 32 * 2;
        if (flops / seconds > best) best = flops / seconds;
        if (sink < 0) printf("%f", sink);
    }
    printf("%.1f\n", best / 1e9);
    return 0;
}
"""


cpu_flags = cpu_bf16_flags  # the bfloat16 flags (amx_bf16, avx512_bf16) this CPU reports


def build(folder: str) -> str:
    """The compiled loop's path in ``folder``; OSError with the compiler's last line if it fails."""
    source, target = os.path.join(folder, "peak.c"), os.path.join(folder, "peak")
    Path(source).write_text(SOURCE)
    compile_c([os.environ.get("CC", "cc"), "-O2", "-mavx512f", "-mavx512bf16", "-fopenmp", source, "-o", target])
    return target


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="up to this many OpenMP threads (default: this process's cores)")
    p.add_argument("--iterations", type=int, default=16_000_000, help="loop trips per thread and repeat")
    args = p.parse_args(argv)
    if args.threads < 1 or args.iterations < 1:
        print("error: --threads and --iterations take positive numbers", file=sys.stderr)
        return 2
    flags = cpu_flags()
    if "avx512_bf16" not in flags:
        print("error: this CPU has no avx512_bf16 (its bf16 dot product); nothing to measure", file=sys.stderr)
        return 2
    folder = tempfile.mkdtemp(prefix="towernet-peak-")
    try:
        try:
            binary = build(folder)
        except OSError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"bf16 dot-product peak (vdpbf16ps, 512-bit){'; this CPU also has AMX' if 'amx_bf16' in flags else ''}")
        for threads in range(1, args.threads + 1):
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_PROC_BIND="close")
            out = subprocess.run([binary, str(args.iterations)], capture_output=True, text=True, env=env, check=True)
            print(f"  {threads} thread{'s' if threads > 1 else ''}: {float(out.stdout):.1f} GFLOP/s")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
