"""Convolutions and max-pools on the oneDNN inside the Paddle wheel, for dygraph on CPU.

Paddle 3.3.1's dygraph CPU conv is a per-sample im2col + MKL GEMM with single-threaded
im2col/col2im, and its max-pool is single-threaded; its oneDNN kernels run only in
static-graph programs, where TowerNet cannot train (bench/README.md). This module calls the
wheel's own ``libs/libdnnl.so.3`` (oneDNN 3.6) through its C API with ``ctypes``, much as
PyTorch's CPU conv goes through ideep: the input is reordered into oneDNN's blocked layout,
the JIT convolution runs, the result is reordered back to NCHW. Forward, backward-data and
backward-weights of TowerNet's convs are ~2x faster than Paddle's at batch 32 on an AVX-512
machine, its max-pools ~3x; ResNet50 and MobileNetV2 train 1.4x and 3.4x faster
(bench/README.md). Convs take bias, stride, padding, dilation and groups.

Same maths as ``F.conv2d`` / ``F.max_pool2d``: conv sums run in another order, so results
differ in the last bits (relative 1e-6); the pool's values and gradients are identical, ties
included (tests/test_onednn.py, tests/test_speed_equivalence.py). Conv inputs with fewer than
``PLAIN_BELOW`` channels (an RGB stem) stay in plain NCHW, where oneDNN's GEMM convolution is
the faster one.

:func:`conv2d` and :func:`max_pool2d` fall back to Paddle where this path does not apply: no
libdnnl (a Paddle build without it, a GPU, a non-x86 machine), a dtype other than float32,
padding given as a string or per side, ceil mode, static graph (``paddle.jit`` export), a
geometry oneDNN refuses, or ``TOWERNET_ONEDNN=0`` in the environment. No compiler is needed:
the enum values below are oneDNN 3.x's stable C ABI (``dnnl_types.h``), checked against the
library's major version at load. Primitives are built once per input shape and kept for the
process (a few per layer: train and eval batch sizes, the last partial batch). All buffers,
blocked copies included, come from Paddle's allocator.
"""
from __future__ import annotations

import ctypes as C
import os

import paddle
import paddle.nn.functional as F
from paddle import nn
from paddle.autograd import PyLayer

PLAIN_BELOW = 8

# oneDNN 3.x C ABI constants (oneapi/dnnl/dnnl_types.h, dnnl_common_types.h).
_F32, _CPU, _STREAM_DEFAULT = 3, 1, 1
_TAG_A, _TAG_ANY, _TAG_NCHW, _TAG_GOIHW = 2, 1, 5, 6  # nchw = oihw = "abcd", goihw = "abcde"
_FORWARD_TRAINING, _CONV_DIRECT, _POOLING_MAX = 64, 1, 511
_Q_IMPL_INFO, _Q_SRC, _Q_DIFF_SRC, _Q_WEIGHTS, _Q_DIFF_WEIGHTS, _Q_DST, _Q_DIFF_DST = 8, 129, 130, 131, 132, 133, 134
_Q_WORKSPACE = 135
_ARG_SRC, _ARG_DST, _ARG_WEIGHTS, _ARG_BIAS = 1, 17, 33, 41
_ARG_DIFF_SRC, _ARG_DIFF_DST, _ARG_DIFF_WEIGHTS, _ARG_DIFF_BIAS = 129, 145, 161, 169
_ARG_WORKSPACE = 64

_Dims = C.c_int64 * 12


class _ExecArg(C.Structure):
    _fields_ = [("arg", C.c_int), ("memory", C.c_void_p)]


class _Version(C.Structure):
    _fields_ = [("major", C.c_int), ("minor", C.c_int), ("patch", C.c_int), ("hash", C.c_char_p),
                ("cpu_runtime", C.c_uint), ("gpu_runtime", C.c_uint)]


class _Dnnl:
    """The loaded library, one CPU engine and one stream."""

    def __init__(self, path: str) -> None:
        lib = self.lib = C.CDLL(path)
        lib.dnnl_version.restype = C.POINTER(_Version)
        version = lib.dnnl_version().contents
        if version.major != 3:
            raise OSError(f"oneDNN {version.major}.{version.minor}: this module speaks the 3.x ABI")
        lib.dnnl_primitive_desc_query_md.restype = C.c_void_p
        lib.dnnl_primitive_desc_query_md.argtypes = [C.c_void_p, C.c_int, C.c_int]
        lib.dnnl_memory_desc_get_size.restype = C.c_size_t
        lib.dnnl_memory_desc_get_size.argtypes = [C.c_void_p]
        lib.dnnl_memory_desc_equal.argtypes = [C.c_void_p, C.c_void_p]
        lib.dnnl_memory_set_data_handle.argtypes = [C.c_void_p, C.c_void_p]
        lib.dnnl_primitive_execute.argtypes = [C.c_void_p, C.c_void_p, C.c_int, C.c_void_p]
        self.engine, self.stream = C.c_void_p(), C.c_void_p()
        self.check(lib.dnnl_engine_create(C.byref(self.engine), _CPU, C.c_size_t(0)))
        self.check(lib.dnnl_stream_create(C.byref(self.stream), self.engine, _STREAM_DEFAULT))

    @staticmethod
    def check(status: int) -> None:
        if status != 0:
            raise RuntimeError(f"oneDNN call failed with status {status}")

    def memory_desc(self, shape: list[int], tag: int) -> int:
        md = C.c_void_p()
        self.check(self.lib.dnnl_memory_desc_create_with_tag(C.byref(md), len(shape), _dims(shape), _F32, tag))
        return md.value

    def primitive(self, pd: C.c_void_p) -> C.c_void_p:
        p = C.c_void_p()
        self.check(self.lib.dnnl_primitive_create(C.byref(p), pd))
        return p

    def memory(self, md: int) -> C.c_void_p:
        m = C.c_void_p()
        self.check(self.lib.dnnl_memory_create(C.byref(m), C.c_void_p(md), self.engine, C.c_void_p(0)))
        return m

    def execute(self, primitive: C.c_void_p, args: list[tuple[int, C.c_void_p, paddle.Tensor]]) -> None:
        packed = (_ExecArg * len(args))()
        for i, (arg, memory, tensor) in enumerate(args):
            self.lib.dnnl_memory_set_data_handle(memory, tensor.data_ptr())
            packed[i] = _ExecArg(arg, memory)
        self.check(self.lib.dnnl_primitive_execute(primitive, self.stream, len(args), packed))

    def empty(self, md: int) -> paddle.Tensor:
        """A Paddle-allocated buffer big enough for ``md`` (so Paddle's allocator owns all memory)."""
        return paddle.empty([(self.lib.dnnl_memory_desc_get_size(md) + 3) // 4], "float32")


def _dims(values) -> _Dims:
    d = _Dims()
    for i, v in enumerate(values):
        d[i] = v
    return d


class _Reorder:
    def __init__(self, dnnl: _Dnnl, src_md: int, dst_md: int) -> None:
        pd = C.c_void_p()
        dnnl.check(dnnl.lib.dnnl_reorder_primitive_desc_create(
            C.byref(pd), C.c_void_p(src_md), dnnl.engine, C.c_void_p(dst_md), dnnl.engine, C.c_void_p(0)))
        self.dnnl, self.primitive = dnnl, dnnl.primitive(pd)
        self.src, self.dst = dnnl.memory(src_md), dnnl.memory(dst_md)

    def __call__(self, src: paddle.Tensor, dst: paddle.Tensor) -> paddle.Tensor:
        self.dnnl.execute(self.primitive, [(_ARG_SRC, self.src, src), (_ARG_DST, self.dst, dst)])
        return dst


class _ConvPlan:
    """Primitives for one convolution geometry: forward, backward-data and backward-weights."""

    def __init__(self, dnnl: _Dnnl, x_shape: list[int], w_shape: list[int], bias: bool,
                 stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                 groups: int, blocked: bool) -> None:
        n, _, h, w = x_shape
        co, ci_g, kh, kw = w_shape
        out_hw = [(size + 2 * p - d * (k - 1) - 1) // s + 1
                  for size, p, d, k, s in zip((h, w), padding, dilation, (kh, kw), stride)]
        self.dnnl = dnnl
        self.shapes = {"x": x_shape, "w": w_shape, "b": [co], "y": [n, co, *out_hw]}
        w_dims, w_tag = (w_shape, _TAG_NCHW) if groups == 1 else ([groups, co // groups, ci_g, kh, kw], _TAG_GOIHW)
        self.plain = {"x": dnnl.memory_desc(x_shape, _TAG_NCHW), "w": dnnl.memory_desc(w_dims, w_tag),
                      "b": dnnl.memory_desc([co], _TAG_A), "y": dnnl.memory_desc(self.shapes["y"], _TAG_NCHW)}
        if blocked:
            x, w, y = (C.c_void_p(dnnl.memory_desc(dims, _TAG_ANY)) for dims in (x_shape, w_dims, self.shapes["y"]))
        else:
            x, w, y = (C.c_void_p(self.plain[k]) for k in "xwy")
        b = C.c_void_p(self.plain["b"] if bias else 0)
        geometry = (_dims(stride), _dims([d - 1 for d in dilation]), _dims(padding), _dims(padding))
        lib, none = dnnl.lib, C.c_void_p(0)
        fwd, bwd_data, bwd_weights = C.c_void_p(), C.c_void_p(), C.c_void_p()
        dnnl.check(lib.dnnl_convolution_forward_primitive_desc_create(
            C.byref(fwd), dnnl.engine, _FORWARD_TRAINING, _CONV_DIRECT, x, w, b, y, *geometry, none))
        dnnl.check(lib.dnnl_convolution_backward_data_primitive_desc_create(
            C.byref(bwd_data), dnnl.engine, _CONV_DIRECT, x, w, y, *geometry, fwd, none))
        dnnl.check(lib.dnnl_convolution_backward_weights_primitive_desc_create(
            C.byref(bwd_weights), dnnl.engine, _CONV_DIRECT, x, w, b, y, *geometry, fwd, none))
        query = lib.dnnl_primitive_desc_query_md
        self.fwd = self._pass(fwd, {"x": query(fwd, _Q_SRC, 0), "w": query(fwd, _Q_WEIGHTS, 0),
                                    "y": query(fwd, _Q_DST, 0), "b": self.plain["b"]})
        self.bwd_data = self._pass(bwd_data, {"dx": query(bwd_data, _Q_DIFF_SRC, 0),
                                              "w": query(bwd_data, _Q_WEIGHTS, 0),
                                              "dy": query(bwd_data, _Q_DIFF_DST, 0)})
        self.bwd_weights = self._pass(bwd_weights, {"x": query(bwd_weights, _Q_SRC, 0),
                                                    "dw": query(bwd_weights, _Q_DIFF_WEIGHTS, 0),
                                                    "dy": query(bwd_weights, _Q_DIFF_DST, 0),
                                                    "db": self.plain["b"]})
        self.implementation = _impl_name(dnnl, fwd)
        self._reorders: dict[tuple[int, int], _Reorder] = {}

    def _pass(self, pd: C.c_void_p, mds: dict[str, int]) -> dict:
        return {"primitive": self.dnnl.primitive(pd), "md": mds,
                "mem": {k: self.dnnl.memory(md) for k, md in mds.items()}}

    def _reorder(self, tensor: paddle.Tensor, src_md: int, dst_md: int, out: paddle.Tensor) -> paddle.Tensor:
        key = (src_md, dst_md)
        if key not in self._reorders:
            self._reorders[key] = _Reorder(self.dnnl, src_md, dst_md)
        return self._reorders[key](tensor, out)

    def to_pass(self, tensor: paddle.Tensor, kind: str, md: int) -> paddle.Tensor:
        """A Paddle-layout tensor in the layout ``md`` a primitive wants (itself if already so)."""
        plain = self.plain[kind]
        if self.dnnl.lib.dnnl_memory_desc_equal(plain, md):
            return tensor
        return self._reorder(tensor, plain, md, self.dnnl.empty(md))

    def from_pass(self, tensor: paddle.Tensor, kind: str, md: int) -> paddle.Tensor:
        plain, shape = self.plain[kind], self.shapes[kind]
        if self.dnnl.lib.dnnl_memory_desc_equal(plain, md):
            return tensor.reshape(shape)
        return self._reorder(tensor, md, plain, paddle.empty(shape, "float32"))

    def run(self, which: dict, **tensors: paddle.Tensor) -> None:
        args = {"x": _ARG_SRC, "w": _ARG_WEIGHTS, "b": _ARG_BIAS, "y": _ARG_DST,
                "dx": _ARG_DIFF_SRC, "dw": _ARG_DIFF_WEIGHTS, "db": _ARG_DIFF_BIAS, "dy": _ARG_DIFF_DST}
        self.dnnl.execute(which["primitive"], [(args[k], which["mem"][k], t) for k, t in tensors.items()])

    def forward(self, x: paddle.Tensor, w: paddle.Tensor, b: paddle.Tensor | None) -> paddle.Tensor:
        md = self.fwd["md"]
        y = self.dnnl.empty(md["y"])
        extra = {} if b is None else {"b": b}
        self.run(self.fwd, x=self.to_pass(x, "x", md["x"]), w=self.to_pass(w, "w", md["w"]), y=y, **extra)
        return self.from_pass(y, "y", md["y"])

    def backward(self, x: paddle.Tensor, w: paddle.Tensor, dy: paddle.Tensor, need_dx: bool, need_db: bool):
        dx = db = None
        dy_data = self.to_pass(dy, "y", self.bwd_data["md"]["dy"])
        if need_dx:
            md = self.bwd_data["md"]
            dx = self.dnnl.empty(md["dx"])
            self.run(self.bwd_data, dy=dy_data, w=self.to_pass(w, "w", md["w"]), dx=dx)
            dx = self.from_pass(dx, "x", md["dx"])
        md = self.bwd_weights["md"]
        same = self.dnnl.lib.dnnl_memory_desc_equal(md["dy"], self.bwd_data["md"]["dy"])
        dw = self.dnnl.empty(md["dw"])
        extra = {}
        if need_db:
            db = extra["db"] = paddle.empty(self.shapes["b"], "float32")
        self.run(self.bwd_weights, x=self.to_pass(x, "x", md["x"]), dw=dw,
                 dy=dy_data if same else self.to_pass(dy, "y", md["dy"]), **extra)
        return dx, self.from_pass(dw, "w", md["dw"]), db


class _MaxPoolPlan:
    """Max-pool forward (with the argmax workspace) and backward, plain NCHW in and out."""

    def __init__(self, dnnl: _Dnnl, x_shape: list[int], kernel: tuple[int, int],
                 stride: tuple[int, int], padding: tuple[int, int]) -> None:
        n, c, h, w = x_shape
        out_hw = [(size + 2 * p - k) // s + 1 for size, p, k, s in zip((h, w), padding, kernel, stride)]
        self.dnnl, self.x_shape, self.y_shape = dnnl, x_shape, [n, c, *out_hw]
        x, y = (C.c_void_p(dnnl.memory_desc(shape, _TAG_NCHW)) for shape in (x_shape, self.y_shape))
        geometry = (_dims(stride), _dims(kernel), _dims([0, 0]), _dims(padding), _dims(padding))
        lib, none = dnnl.lib, C.c_void_p(0)
        fwd, bwd = C.c_void_p(), C.c_void_p()
        dnnl.check(lib.dnnl_pooling_forward_primitive_desc_create(
            C.byref(fwd), dnnl.engine, _FORWARD_TRAINING, _POOLING_MAX, x, y, *geometry, none))
        dnnl.check(lib.dnnl_pooling_backward_primitive_desc_create(
            C.byref(bwd), dnnl.engine, _POOLING_MAX, x, y, *geometry, fwd, none))
        self.workspace_md = lib.dnnl_primitive_desc_query_md(fwd, _Q_WORKSPACE, 0)
        self.fwd, self.bwd = dnnl.primitive(fwd), dnnl.primitive(bwd)
        self.x, self.y, self.workspace = dnnl.memory(x.value), dnnl.memory(y.value), dnnl.memory(self.workspace_md)
        self.implementation = _impl_name(dnnl, fwd)

    def forward(self, x: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        y, workspace = paddle.empty(self.y_shape, "float32"), self.dnnl.empty(self.workspace_md)
        self.dnnl.execute(self.fwd, [(_ARG_SRC, self.x, x), (_ARG_DST, self.y, y),
                                     (_ARG_WORKSPACE, self.workspace, workspace)])
        return y, workspace

    def backward(self, dy: paddle.Tensor, workspace: paddle.Tensor) -> paddle.Tensor:
        dx = paddle.empty(self.x_shape, "float32")
        self.dnnl.execute(self.bwd, [(_ARG_DIFF_DST, self.y, dy), (_ARG_DIFF_SRC, self.x, dx),
                                     (_ARG_WORKSPACE, self.workspace, workspace)])
        return dx


def _impl_name(dnnl: _Dnnl, pd: C.c_void_p) -> str:
    name = C.c_char_p()
    dnnl.lib.dnnl_primitive_desc_query(pd, _Q_IMPL_INFO, 0, C.byref(name))
    return (name.value or b"").decode()


_DNNL: _Dnnl | None = None
_LOAD_ERROR: str | None = None
_PLANS: dict[tuple, "_ConvPlan | _MaxPoolPlan | None"] = {}  # None: oneDNN refused this geometry


def _load() -> _Dnnl | None:
    global _DNNL, _LOAD_ERROR
    if _DNNL is None and _LOAD_ERROR is None:
        try:
            _DNNL = _Dnnl(os.path.join(os.path.dirname(paddle.__file__), "libs", "libdnnl.so.3"))
        except (OSError, AttributeError, RuntimeError) as e:
            _LOAD_ERROR = str(e)
    return _DNNL


def available() -> bool:
    """True when :func:`conv2d` can take the oneDNN path in this process."""
    return (os.environ.get("TOWERNET_ONEDNN", "1") != "0" and paddle.in_dynamic_mode()
            and paddle.get_device() == "cpu" and _load() is not None)


class _OneDnnConv2D(PyLayer):
    @staticmethod
    def forward(ctx, x, weight, bias, plan):
        ctx.plan, ctx.need_dx, ctx.has_bias = plan, not x.stop_gradient, bias is not None
        ctx.save_for_backward(x, weight)
        return plan.forward(x, weight, bias)

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensor()
        dx, dw, db = ctx.plan.backward(x, weight, dy.contiguous(), ctx.need_dx, ctx.has_bias)
        return (dx, dw, db) if ctx.has_bias else (dx, dw)


class _OneDnnMaxPool2D(PyLayer):
    @staticmethod
    def forward(ctx, x, plan):
        y, workspace = plan.forward(x)
        ctx.plan = plan
        ctx.save_for_backward(workspace)
        return y

    @staticmethod
    def backward(ctx, dy):
        (workspace,) = ctx.saved_tensor()
        return ctx.plan.backward(dy.contiguous(), workspace)


def _pair(value) -> tuple[int, int] | None:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return tuple(value)
    return None


def conv2d(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor | None = None,
           stride=1, padding=0, dilation=1, groups: int = 1) -> paddle.Tensor:
    """``F.conv2d`` for NCHW float32 with symmetric int padding, on oneDNN when :func:`available`."""
    geometry = _pair(stride), _pair(padding), _pair(dilation)
    if not (available() and None not in geometry and x.dtype == paddle.float32
            and weight.dtype == paddle.float32 and x.ndim == 4 and x.place.is_cpu_place()):
        return F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
    key = (tuple(x.shape), tuple(weight.shape), bias is not None, *geometry, groups)
    plan = _plan(key, _ConvPlan, list(x.shape), list(weight.shape), bias is not None, *geometry, groups,
                 x.shape[1] >= PLAIN_BELOW)
    if plan is None:
        return F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return _OneDnnConv2D.apply(x.contiguous(), weight.contiguous(), bias, plan)


def _plan(key: tuple, build, *args):
    """The cached plan for ``key``, built on first use; None if oneDNN refuses the geometry."""
    if key not in _PLANS:
        try:
            _PLANS[key] = build(_DNNL, *args)
        except RuntimeError:  # a status other than success: leave this shape to Paddle
            _PLANS[key] = None
    return _PLANS[key]


def max_pool2d(x: paddle.Tensor, kernel_size, stride=None, padding=0) -> paddle.Tensor:
    """``F.max_pool2d`` (NCHW, floor mode, int padding), on oneDNN when :func:`available`.

    The gradient goes to the first maximum of each window, as in ``F.max_pool2d``
    (ties included; tests/test_onednn.py).
    """
    geometry = _pair(kernel_size), _pair(kernel_size if stride is None else stride), _pair(padding)
    if not (available() and None not in geometry and x.dtype == paddle.float32 and x.ndim == 4
            and x.place.is_cpu_place()):
        return _paddle_max_pool2d(x, kernel_size, stride, padding)
    plan = _plan(("maxpool", tuple(x.shape), *geometry), _MaxPoolPlan, list(x.shape), *geometry)
    if plan is None:
        return _paddle_max_pool2d(x, kernel_size, stride, padding)
    return _OneDnnMaxPool2D.apply(x.contiguous(), plan)


def _paddle_max_pool2d(x: paddle.Tensor, kernel_size, stride, padding) -> paddle.Tensor:
    # Where gradients flow, Paddle's argmax path: same values and gradient as the plain pool,
    # but its CPU backward scatters through saved indices instead of rescanning each window.
    if x.stop_gradient or not paddle.is_grad_enabled():
        return F.max_pool2d(x, kernel_size, stride, padding)
    return F.max_pool2d(x, kernel_size, stride, padding, return_mask=True)[0]


class Conv2D(nn.Conv2D):
    """``nn.Conv2D`` whose dygraph CPU forward and backward run on oneDNN (see module doc).

    Same parameters, state-dict keys and maths. :func:`convert` turns a model's ``nn.Conv2D``
    layers into this class in place; static graphs (export) and other devices take
    ``nn.Conv2D.forward`` unchanged.
    """

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if not available():
            return super().forward(x)
        return conv2d(x, self.weight, self.bias, self._stride, self._padding, self._dilation, self._groups)


class MaxPool2D(nn.MaxPool2D):
    """``nn.MaxPool2D`` on oneDNN (see :func:`max_pool2d`); same values and gradients."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return max_pool2d(x, self.ksize, self.stride, self.padding)


def convertible(layer: nn.Layer) -> bool:
    """Whether :func:`convert` switches ``layer`` (other forms stay with Paddle's kernels)."""
    if type(layer) is nn.Conv2D:
        return (layer._data_format == "NCHW" and layer._padding_mode == "zeros"
                and None not in (_pair(layer._stride), _pair(layer._padding), _pair(layer._dilation)))
    if type(layer) is nn.MaxPool2D:
        return (layer.data_format == "NCHW" and not layer.ceil_mode and not layer.return_mask
                and None not in (_pair(layer.ksize), _pair(layer.padding))
                and (layer.stride is None or _pair(layer.stride) is not None))
    return False


def convert(model: nn.Layer) -> nn.Layer:
    """Switch ``model``'s plain ``nn.Conv2D`` / ``nn.MaxPool2D`` layers to this module's, in place.

    The layers keep their identity, parameters and buffers (``__class__`` is swapped: the
    subclasses add no state), so optimizers, checkpoints and hooks see no difference.
    """
    for layer in model.sublayers(include_self=True):
        if convertible(layer):
            layer.__class__ = Conv2D if isinstance(layer, nn.Conv2D) else MaxPool2D
    return model
