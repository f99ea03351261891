"""BatchNorm + ReLU6 in one pass each way: a small C kernel (``bn_clip.c``), built at first use.

oneDNN's batch-normalisation primitive fuses a ReLU but not a ReLU6, so MobileNetV2's
channels-last BN -> ReLU6 pairs ran as oneDNN's BN and then Paddle's ReLU6: two passes over
the map forward (three reads and two writes) and two backward. ``bn_clip.c`` computes the
batch statistics, normalises and clips in one kernel, and in the backward recomputes the
clip's mask from the input instead of reading the output. On MobileNetV2's 128 px / batch 32
shapes this makes BN + ReLU6 forward + backward ~16% faster (docs/speed.md).
A plain ReLU gains nothing from it (oneDNN fuses that one: ResNet-50's shapes were 8% slower
here), so only ReLU6 uses it.

Built with the system C compiler (``$CC``, default ``cc``; ~0.3 s once per process) in a
temporary folder that is removed as soon as the library is loaded, and linked against the
wheel's own ``libiomp5``, so it shares oneDNN's OpenMP threads. No compiler, no ``libiomp5``
in the wheel, a failed build or ``TOWERNET_FUSED=0``: :func:`load` returns None and the pair
runs as before (oneDNN's BN, then Paddle's ReLU6); :func:`reason` says why.
"""
from __future__ import annotations

import ctypes as C
import os
import shutil
import subprocess
import tempfile

import paddle

from ._dnnl import empty as _empty

SOURCE = os.path.join(os.path.dirname(__file__), "bn_clip.c")
VECTOR = 16  # the kernel's channel granularity: C must be a multiple of it

_LIB: C.CDLL | None = None
_REASON: str | None = None  # why the kernel is not loaded (None: loaded, or not tried yet)


def compile_c(command: list) -> None:
    """Run the C compiler ``command`` (``$CC`` first); OSError with its last line if it fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        raise OSError(f"{command[0]}: {e}") from e
    if done.returncode != 0:
        raise OSError(f"{command[0]} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")


def _build() -> C.CDLL:
    libs = os.path.join(os.path.dirname(paddle.__file__), "libs")
    if not os.path.exists(os.path.join(libs, "libiomp5.so")):
        raise OSError(f"no libiomp5.so in {libs} (this Paddle build's OpenMP runtime is unknown)")
    folder = tempfile.mkdtemp(prefix="towernet-fused-")
    try:  # the folder goes as soon as the library is loaded (a mapped file outlives its name)
        target = os.path.join(folder, "libbn_clip.so")
        compile_c([os.environ.get("CC", "cc"), "-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", SOURCE,
                   "-o", target, f"-L{libs}", "-l:libiomp5.so", f"-Wl,-rpath,{libs}", "-lm"])
        lib = C.CDLL(target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    ptr, n, f = C.c_void_p, C.c_long, C.c_float
    lib.bn_clip_forward.argtypes = [ptr] * 6 + [n, n, f, f, f]
    lib.bn_clip_backward.argtypes = [ptr] * 9 + [n, n, f, f, f]
    return lib


def load() -> C.CDLL | None:
    """The built kernel, or None (see :func:`reason`). Built once per process."""
    global _LIB, _REASON
    if os.environ.get("TOWERNET_FUSED", "1") == "0":
        return None
    if _LIB is None and _REASON is None:
        try:
            _LIB = _build()
        except OSError as e:
            _REASON = str(e)
    return _LIB


def reason() -> str | None:
    """Why :func:`load` gives None (None when it is loaded or has not been tried)."""
    if os.environ.get("TOWERNET_FUSED", "1") == "0":
        return "TOWERNET_FUSED=0"
    return _REASON


def forward(lib: C.CDLL, x: paddle.Tensor, scale: paddle.Tensor, shift: paddle.Tensor, epsilon: float,
            lo: float, hi: float) -> tuple:
    """(y, batch mean, batch biased variance) of a contiguous channels-last float32 ``x``."""
    c = x.shape[-1]
    y, mean, var = _empty(x.shape), _empty([c]), _empty([c])
    if lib.bn_clip_forward(x.data_ptr(), y.data_ptr(), scale.data_ptr(), shift.data_ptr(), mean.data_ptr(),
                           var.data_ptr(), x.size // c, c, epsilon, lo, hi):
        raise MemoryError("bn_clip_forward: out of memory")
    return y, mean, var


def backward(lib: C.CDLL, x, dy, scale, shift, mean, var, epsilon: float, lo: float, hi: float) -> tuple:
    """(dx, dscale, dshift) for :func:`forward`'s output gradient ``dy`` (contiguous)."""
    c = x.shape[-1]
    dx, dscale, dshift = _empty(x.shape), _empty([c]), _empty([c])
    if lib.bn_clip_backward(x.data_ptr(), dy.data_ptr(), dx.data_ptr(), scale.data_ptr(), shift.data_ptr(),
                            mean.data_ptr(), var.data_ptr(), dscale.data_ptr(), dshift.data_ptr(),
                            x.size // c, c, epsilon, lo, hi):
        raise MemoryError("bn_clip_backward: out of memory")
    return dx, dscale, dshift


class BatchNormReLU6Plan:
    """The kernel for ``onednn``'s BatchNorm PyLayer, with ``_dnnl.BatchNormPlan``'s interface.

    Its "workspace" is the shift: the backward recomputes the clip's mask from x, the scale
    and the shift instead of reading a stored mask.
    """

    def __init__(self, lib: C.CDLL, epsilon: float) -> None:
        self.lib, self.epsilon = lib, epsilon

    def forward(self, x, scale, shift) -> tuple:
        return (*forward(self.lib, x, scale, shift, self.epsilon, 0.0, 6.0), shift)

    def backward(self, x, dy, mean, var, scale, shift) -> tuple:
        return backward(self.lib, x, dy, scale, shift, mean, var, self.epsilon, 0.0, 6.0)
