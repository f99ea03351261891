"""The training application, below the thin entry scripts train.py and eval.py.

    config.py          YAML (default.yaml <- family/model YAML <- -o) -> checked two-level dict
    images.py          any image file -> 8-bit RGB (the one place files are decoded)
    data.py            DatasetFolder-backed dataset, transforms, decoded-image cache, loaders
    engine.py          builders: device, network, optimizer + schedule, hapi Model, evaluate
    trainer.py         a run: folder, resume, fit, exit codes; study.py: seeds x models
    callbacks.py       save best/last (atomic), VisualDL, NaN guard, state.json
    evaluation.py      eval / predict on a checkpoint; export.py: paddle.jit.save + predictor
    metrics.py report.py attention_maps.py   accuracy, tables and figures, attention pictures
    atomic.py errors.py                      atomic writes; UserError -> one line, exit 2

It imports ``models`` (architectures) and never ``data_tools`` (the CLIs import ``app``).

Importing ``app`` (every entry point does so before Paddle) quietens Paddle's import-time
chatter: the C++ INFO log lines and the "No ccache found" warning, which concern building
custom operators, not training. Set GLOG_minloglevel yourself to see the C++ logs again.

On AMD CPUs it also sets MKL_DEBUG_CPU_TYPE=5 (unless already set). Paddle 3.3.1's CPU
convolutions are im2col + GEMM from the MKL-ML it bundles (2019.0.5), which on a non-Intel
CPU picks its slow generic code path; this variable, honoured by MKL up to 2020.0, makes
it use its AVX2 kernels: the TowerNet training step is ~2x faster on AMD EPYC
(bench/README.md). Same maths; only the GEMM kernels change. It must be in the environment
before MKL initialises, hence here. Intel CPUs are left alone (there it would cap MKL at AVX2).

On Linux with glibc it also keeps freed memory in the process heap (``mallopt``: no mmap for
large blocks, no trimming). Paddle's CPU allocator hands every tensor to malloc and back, and
glibc serves blocks above 32 MB (a [32, 64, 64, 64] float32 activation at 128 px is 33.5 MB)
with a fresh mmap each time, so the kernel zero-fills and page-faults every large activation
and gradient of every step: ~2 s of system time per 20 steps and ~17% of the TowerNet step
(bench/README.md). The price: memory stays at its peak instead of going back to the system
between steps, 6-20% more peak RSS in our runs. Set TOWERNET_SYSTEM_MALLOC=1 to keep glibc's
defaults.
"""
import ctypes
import os
import sys
import warnings

os.environ.setdefault("GLOG_minloglevel", "2")


def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _keep_heap() -> bool:
    """Ask glibc never to mmap or trim (M_MMAP_MAX=0, M_TRIM_THRESHOLD=2**31-1); False if not glibc."""
    if not sys.platform.startswith("linux") or os.environ.get("TOWERNET_SYSTEM_MALLOC") == "1":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): leave the allocator alone
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1) and mallopt(M_MMAP_MAX, 0))


HEAP_KEPT = _keep_heap()
if _cpu_vendor() == "AuthenticAMD":
    os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")
warnings.filterwarnings("ignore", message="No ccache found")
# Paddle warns about these on every epoch; neither concerns the user.
warnings.filterwarnings("ignore", message="When training, we now always track global mean")
warnings.filterwarnings("ignore", message="To copy construct from a tensor")
