"""The oneDNN C API through ``ctypes``: the library in the Paddle wheel, reorders, conv and max-pool plans.

Used by :mod:`backend.onednn` (which says why). The enum values are oneDNN 3.x's stable C ABI
(``oneapi/dnnl/dnnl_types.h``, ``dnnl_common_types.h``); :class:`Dnnl` checks the library's
major version at load. A plan builds its primitives once for one geometry; every buffer it
runs on, blocked copies included, is a Paddle tensor, so Paddle's allocator owns all memory.
"""
from __future__ import annotations

import ctypes as C

import paddle

# oneDNN 3.x C ABI constants (oneapi/dnnl/dnnl_types.h, dnnl_common_types.h).
_BF16, _F32, _CPU, _STREAM_DEFAULT = 2, 3, 1, 1
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


class Dnnl:
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

    def memory_desc(self, shape: list[int], tag: int, dtype: int = _F32) -> int:
        md = C.c_void_p()
        self.check(self.lib.dnnl_memory_desc_create_with_tag(C.byref(md), len(shape), _dims(shape), dtype, tag))
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
    def __init__(self, dnnl: Dnnl, src_md: int, dst_md: int) -> None:
        pd = C.c_void_p()
        dnnl.check(dnnl.lib.dnnl_reorder_primitive_desc_create(
            C.byref(pd), C.c_void_p(src_md), dnnl.engine, C.c_void_p(dst_md), dnnl.engine, C.c_void_p(0)))
        self.dnnl, self.primitive = dnnl, dnnl.primitive(pd)
        self.src, self.dst = dnnl.memory(src_md), dnnl.memory(dst_md)

    def __call__(self, src: paddle.Tensor, dst: paddle.Tensor) -> paddle.Tensor:
        self.dnnl.execute(self.primitive, [(_ARG_SRC, self.src, src), (_ARG_DST, self.dst, dst)])
        return dst


class ConvPlan:
    """Primitives for one convolution geometry: forward, backward-data and backward-weights.

    ``bf16``: the primitives multiply bfloat16 copies of the input, weights and upstream
    gradient (made by the reorders into the blocked layout) and write float32 outputs and
    gradients, oneDNN accumulating in float32; the caller's tensors stay float32.
    """

    def __init__(self, dnnl: Dnnl, x_shape: list[int], w_shape: list[int], bias: bool,
                 stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                 groups: int, blocked: bool, bf16: bool = False) -> None:
        n, _, h, w = x_shape
        co, ci_g, kh, kw = w_shape
        out_hw = [(size + 2 * p - d * (k - 1) - 1) // s + 1
                  for size, p, d, k, s in zip((h, w), padding, dilation, (kh, kw), stride)]
        self.dnnl, self.has_bias = dnnl, bias
        self.shapes = {"x": x_shape, "w": w_shape, "b": [co], "y": [n, co, *out_hw]}
        w_dims, w_tag = (w_shape, _TAG_NCHW) if groups == 1 else ([groups, co // groups, ci_g, kh, kw], _TAG_GOIHW)
        self.plain = {"x": dnnl.memory_desc(x_shape, _TAG_NCHW), "w": dnnl.memory_desc(w_dims, w_tag),
                      "b": dnnl.memory_desc([co], _TAG_A), "y": dnnl.memory_desc(self.shapes["y"], _TAG_NCHW)}
        dims = {"x": x_shape, "w": w_dims, "y": self.shapes["y"]}
        if blocked:  # outputs and gradients in float32, the multiplied operands in ``low``
            low = _BF16 if bf16 else _F32
            out = {k: C.c_void_p(dnnl.memory_desc(d, _TAG_ANY)) for k, d in dims.items()}
            mul = {k: C.c_void_p(dnnl.memory_desc(d, _TAG_ANY, low)) for k, d in dims.items()} if bf16 else out
        else:
            out = mul = {k: C.c_void_p(self.plain[k]) for k in "xwy"}
        b = C.c_void_p(self.plain["b"] if bias else 0)
        geometry = (_dims(stride), _dims([d - 1 for d in dilation]), _dims(padding), _dims(padding))
        lib, none = dnnl.lib, C.c_void_p(0)
        fwd, bwd_data, bwd_weights = C.c_void_p(), C.c_void_p(), C.c_void_p()
        dnnl.check(lib.dnnl_convolution_forward_primitive_desc_create(
            C.byref(fwd), dnnl.engine, _FORWARD_TRAINING, _CONV_DIRECT, mul["x"], mul["w"], b, out["y"],
            *geometry, none))
        dnnl.check(lib.dnnl_convolution_backward_data_primitive_desc_create(
            C.byref(bwd_data), dnnl.engine, _CONV_DIRECT, out["x"], mul["w"], mul["y"], *geometry, fwd, none))
        dnnl.check(lib.dnnl_convolution_backward_weights_primitive_desc_create(
            C.byref(bwd_weights), dnnl.engine, _CONV_DIRECT, mul["x"], out["w"], b, mul["y"], *geometry,
            fwd, none))
        # The primitive descriptors are never destroyed: the memory descriptors queried from
        # them belong to them, and a plan lives as long as the process.
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
        self.implementation = impl_name(dnnl, fwd)
        self._reorders: dict[tuple[int, int], _Reorder] = {}
        # bf16: the forward's bfloat16 input is kept for backward-weights when that pass reads
        # the same layout (one converting reorder less, and half the memory of the float32 input
        # it replaces). Deriving every bfloat16 layout from the forward's copies instead of from
        # the float32 originals was measured and did not help (bench/README.md).
        self.keep_x = bf16 and dnnl.lib.dnnl_memory_desc_equal(
            self.fwd["md"]["x"], self.bwd_weights["md"]["x"]) == 1

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

    def forward(self, x: paddle.Tensor, w: paddle.Tensor, b: paddle.Tensor | None) -> tuple:
        """(y, x_keep): the output and what :meth:`backward` takes as ``x`` (see ``keep_x``)."""
        md = self.fwd["md"]
        y = self.dnnl.empty(md["y"])
        extra = {} if b is None else {"b": b}
        x_pass = self.to_pass(x, "x", md["x"])
        self.run(self.fwd, x=x_pass, w=self.to_pass(w, "w", md["w"]), y=y, **extra)
        return self.from_pass(y, "y", md["y"]), x_pass if self.keep_x else x

    def backward(self, x: paddle.Tensor, w: paddle.Tensor, dy: paddle.Tensor,
                 need_dx: bool, need_weights: bool) -> tuple:
        """(dx, dw, db): dx only if ``need_dx``, dw and db (None without bias) if ``need_weights``.

        ``x`` is the forward's ``x_keep``.
        """
        dx = dw = db = None
        dy_data = self.to_pass(dy, "y", self.bwd_data["md"]["dy"])
        if need_dx:
            md = self.bwd_data["md"]
            dx = self.dnnl.empty(md["dx"])
            self.run(self.bwd_data, dy=dy_data, w=self.to_pass(w, "w", md["w"]), dx=dx)
            dx = self.from_pass(dx, "x", md["dx"])
        if need_weights:
            md = self.bwd_weights["md"]
            same = self.dnnl.lib.dnnl_memory_desc_equal(md["dy"], self.bwd_data["md"]["dy"])
            dw = self.dnnl.empty(md["dw"])
            extra = {}
            if self.has_bias:  # the primitive writes the bias gradient whenever it has a bias
                db = extra["db"] = paddle.empty(self.shapes["b"], "float32")
            self.run(self.bwd_weights, x=x if self.keep_x else self.to_pass(x, "x", md["x"]), dw=dw,
                     dy=dy_data if same else self.to_pass(dy, "y", md["dy"]), **extra)
            dw = self.from_pass(dw, "w", md["dw"])
        return dx, dw, db


class MaxPoolPlan:
    """Max-pool forward (with the argmax workspace) and backward, plain NCHW in and out."""

    def __init__(self, dnnl: Dnnl, x_shape: list[int], kernel: tuple[int, int],
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
        self.implementation = impl_name(dnnl, fwd)

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


def impl_name(dnnl: Dnnl, pd: C.c_void_p) -> str:
    name = C.c_char_p()
    dnnl.lib.dnnl_primitive_desc_query(pd, _Q_IMPL_INFO, 0, C.byref(name))
    return (name.value or b"").decode()


