"""Small C kernels, built at first use: BatchNorm + ReLU6 (``bn_clip.c``) and SimAM
(``simam.c``), each one pass or two each way on channels-last maps.

oneDNN's batch-normalisation primitive fuses a ReLU but not a ReLU6, so MobileNetV2's
channels-last BN -> ReLU6 pairs ran as oneDNN's BN and then Paddle's ReLU6: two passes over
the map forward (three reads and two writes) and two backward. ``bn_clip.c`` computes the
batch statistics, normalises and clips in one kernel, and in the backward recomputes the
clip's mask from the input instead of reading the output. On MobileNetV2's 128 px / batch 32
shapes this makes BN + ReLU6 forward + backward ~16% faster (docs/speed.md).
A plain ReLU gains nothing from it (oneDNN fuses that one: ResNet-50's shapes were 8% slower
here), so only ReLU6 uses it.

SimAM (``simam.c``, :func:`simam`): on a channels-last host the module ran as two transposes
to NCHW and back around eight Paddle ops, each a pass over the map and a node of the
autograd graph; the kernel takes the map as it is (its channels are the vector lanes), one
forward and one backward, with the same float32 maths (docs/speed.md gives what it is worth).

Built with the system C compiler (``$CC``, default ``cc``; ~0.3 s once per process) in a
temporary folder that is removed as soon as the library is loaded, and linked against the
wheel's own ``libiomp5``, so it shares oneDNN's OpenMP threads. No compiler, no ``libiomp5``
in the wheel, a failed build or ``TOWERNET_FUSED=0``: :func:`load` returns None, the pair
runs as before (oneDNN's BN, then Paddle's ReLU6) and SimAM as the module's Paddle ops;
:func:`reason` says why.
"""
from __future__ import annotations

import ctypes as C
import os
import shutil
import subprocess
import tempfile

import paddle
from paddle.autograd import PyLayer

from ._dnnl import empty as _empty

SOURCES = [os.path.join(os.path.dirname(__file__), name) for name in ("bn_clip.c", "simam.c")]
VECTOR = 16  # the kernels' channel granularity: C must be a multiple of it

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
        target = os.path.join(folder, "libtowernet_fused.so")
        compile_c([os.environ.get("CC", "cc"), "-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", *SOURCES,
                   "-o", target, f"-L{libs}", "-l:libiomp5.so", f"-Wl,-rpath,{libs}", "-lm"])
        lib = C.CDLL(target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    ptr, n, f = C.c_void_p, C.c_long, C.c_float
    lib.bn_clip_forward.argtypes = [ptr] * 6 + [n, n, f, f, f]
    lib.bn_clip_backward.argtypes = [ptr] * 9 + [n, n, f, f, f]
    lib.simam_forward.argtypes = [ptr] * 4 + [n, n, n, f]
    lib.simam_backward.argtypes = [ptr] * 5 + [n, n, n]
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


class _SimAM(PyLayer):
    @staticmethod
    def forward(ctx, x, e_lambda, lib):
        n, h, w, c = x.shape
        y, mean, a = _empty(x.shape), _empty([n, c]), _empty([n, c])
        if lib.simam_forward(x.data_ptr(), y.data_ptr(), mean.data_ptr(), a.data_ptr(), n, h * w, c, e_lambda):
            raise MemoryError("simam_forward: out of memory")
        ctx.lib = lib
        ctx.save_for_backward(x, mean, a)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, mean, a = ctx.saved_tensor()
        n, h, w, c = x.shape
        dy, dx = dy.contiguous(), _empty(x.shape)
        if ctx.lib.simam_backward(x.data_ptr(), dy.data_ptr(), dx.data_ptr(), mean.data_ptr(), a.data_ptr(),
                                  n, h * w, c):
            raise MemoryError("simam_backward: out of memory")
        return dx


def simam(x: paddle.Tensor, e_lambda: float) -> paddle.Tensor | None:
    """SimAM (models/attention/simam.py) of a channels-last float32 ``x`` [N, H, W, C] in one
    kernel each way, or None where the kernel does not run (not built, channels not a multiple
    of 16, not a CPU tensor, a static graph): the caller then computes it its own way."""
    if (x.ndim != 4 or x.dtype != paddle.float32 or x.shape[-1] % VECTOR or not paddle.in_dynamic_mode()
            or not x.place.is_cpu_place()):
        return None
    lib = load()
    return None if lib is None else _SimAM.apply(x.contiguous(), float(e_lambda), lib)
