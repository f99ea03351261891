"""The process set-up that must happen before Paddle loads; ``import app`` runs :func:`configure`.

Quiet logs. Paddle's import-time chatter is off: the C++ INFO log lines
(``GLOG_minloglevel=2``) and the "No ccache found" warning, which concern building custom
operators, not training. Set GLOG_minloglevel yourself to see the C++ logs again.

MKL on AMD. Paddle 3.3.1's CPU convolutions (where oneDNN is off) are im2col + GEMM from the
MKL-ML it bundles (2019.0.5), which on a non-Intel CPU picks its slow generic code path;
``MKL_DEBUG_CPU_TYPE=5``, honoured by MKL up to 2020.0, makes it use its AVX2 kernels: the
TowerNet training step is ~2x faster on AMD EPYC (docs/speed.md). Same maths; only the GEMM
kernels change. It must be in the environment before MKL initialises. Intel CPUs are left
alone (there it would cap MKL at AVX2).

The heap. On Linux with glibc freed memory stays in the process heap (``mallopt``: no mmap
for large blocks, no trimming). Paddle's CPU allocator hands every tensor to malloc and back,
and glibc serves blocks above 32 MB (a [32, 64, 64, 64] float32 activation at 128 px is
33.5 MB) with a fresh mmap each time, so the kernel zero-fills and page-faults every large
activation and gradient of every step: ~2 s of system time per 20 steps and ~17% of the
TowerNet step (docs/speed.md). The price: memory stays at its peak instead of going back to
the system between steps, 6-20% more peak RSS in our runs. Set TOWERNET_SYSTEM_MALLOC=1 to
keep glibc's defaults.
"""
import ctypes
import os
import sys
import warnings

HEAP_KEPT = False  # whether configure() made glibc keep freed memory


def cpu_vendor() -> str:
    """``vendor_id`` of /proc/cpuinfo (``AuthenticAMD``, ``GenuineIntel``), or "" if unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def keep_heap() -> bool:
    """Ask glibc never to mmap or trim (M_MMAP_MAX=0, M_TRIM_THRESHOLD=2**31-1); False if not glibc."""
    if not sys.platform.startswith("linux") or os.environ.get("TOWERNET_SYSTEM_MALLOC") == "1":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): leave the allocator alone
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1) and mallopt(M_MMAP_MAX, 0))


def configure() -> None:
    """Set up the process (see the module docstring). Called once, by ``import app``."""
    global HEAP_KEPT
    os.environ.setdefault("GLOG_minloglevel", "2")
    HEAP_KEPT = keep_heap()
    if cpu_vendor() == "AuthenticAMD":
        os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")
    warnings.filterwarnings("ignore", message="No ccache found")
    # Paddle warns about these on every epoch; neither concerns the user.
    warnings.filterwarnings("ignore", message="When training, we now always track global mean")
    warnings.filterwarnings("ignore", message="To copy construct from a tensor")
