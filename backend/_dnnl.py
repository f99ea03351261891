"""The oneDNN C API through ``ctypes``: the library in the Paddle wheel, reorders and the plans.

Used by :mod:`backend.onednn` (which says why). The enum values are oneDNN 3.x's stable C ABI
(``oneapi/dnnl/dnnl_types.h``, ``dnnl_common_types.h``); :class:`Dnnl` checks the library's
major version at load. A plan builds its primitives once for one geometry; every buffer it
runs on, blocked copies included, is a Paddle tensor, so Paddle's allocator owns all memory.
"""
from __future__ import annotations

import ctypes as C
import os

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
_ARG_MEAN, _ARG_VARIANCE, _ARG_SCALE, _ARG_SHIFT, _ARG_DIFF_SCALE, _ARG_DIFF_SHIFT = 49, 50, 51, 52, 255, 256
_FORWARD_INFERENCE, _BACKWARD = 96, 128
_USE_GLOBAL_STATS, _USE_SCALE, _USE_SHIFT, _FUSE_NORM_RELU = 0x1, 0x2, 0x4, 0x8
_ELTWISE_RELU, _ELTWISE_RELU_USE_DST, _BINARY_ADD = 0x20, 0x100, 0x1FFF0
_ARG_SRC_1 = 2

_Dims = C.c_int64 * 12
MATMUL_PIXELS = 4096  # ConvPlan: 1x1 bf16 weight gradients on oneDNN's matmul up to this many N*H*W
GATHER_PIXELS = 2048  # ... and strided ones (gathered first) up to this many output pixels


class _ExecArg(C.Structure):
    _fields_ = [("arg", C.c_int), ("memory", C.c_void_p)]


class _Version(C.Structure):
    _fields_ = [("major", C.c_int), ("minor", C.c_int), ("patch", C.c_int), ("hash", C.c_char_p),
                ("cpu_runtime", C.c_uint), ("gpu_runtime", C.c_uint)]


class Dnnl:
    """The loaded library, one CPU engine and one stream."""

    def __init__(self, path: str, mode: int = C.DEFAULT_MODE) -> None:
        lib = self.lib = C.CDLL(path, mode=mode)
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
        # Their float epsilon needs declaring (ctypes passes plain Python numbers as int/double).
        lib.dnnl_batch_normalization_forward_primitive_desc_create.argtypes = [
            C.c_void_p, C.c_void_p, C.c_int, C.c_void_p, C.c_void_p, C.c_float, C.c_uint, C.c_void_p]
        lib.dnnl_batch_normalization_backward_primitive_desc_create.argtypes = [
            C.c_void_p, C.c_void_p, C.c_int, C.c_void_p, C.c_void_p, C.c_void_p, C.c_float, C.c_uint,
            C.c_void_p, C.c_void_p]
        lib.dnnl_matmul_primitive_desc_create.argtypes = [C.c_void_p] * 7
        lib.dnnl_post_ops_append_eltwise.argtypes = [C.c_void_p, C.c_int, C.c_float, C.c_float]
        lib.dnnl_eltwise_forward_primitive_desc_create.argtypes = [
            C.c_void_p, C.c_void_p, C.c_int, C.c_int, C.c_void_p, C.c_void_p, C.c_float, C.c_float, C.c_void_p]
        lib.dnnl_eltwise_backward_primitive_desc_create.argtypes = [
            C.c_void_p, C.c_void_p, C.c_int, C.c_void_p, C.c_void_p, C.c_void_p, C.c_float, C.c_float,
            C.c_void_p, C.c_void_p]
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

    def activation_desc(self, shape: list[int], nhwc: bool, dtype: int = _F32) -> int:
        """Logical [N, C, H, W] ``shape`` in plain NCHW memory, or channels-last (``acdb``)."""
        if not nhwc:
            return self.memory_desc(shape, _TAG_NCHW, dtype)
        _, c, h, w = shape
        return self.strided_desc(shape, [h * w * c, 1, w * c, c], dtype)

    def strided_desc(self, shape: list[int], strides: list[int], dtype: int) -> int:
        md = C.c_void_p()
        self.check(self.lib.dnnl_memory_desc_create_with_strides(
            C.byref(md), len(shape), _dims(shape), dtype, _dims(strides)))
        return md.value

    def primitive(self, pd: C.c_void_p) -> C.c_void_p:
        p = C.c_void_p()
        self.check(self.lib.dnnl_primitive_create(C.byref(p), pd))
        return p

    def memory(self, md: int) -> C.c_void_p:
        m = C.c_void_p()
        self.check(self.lib.dnnl_memory_create(C.byref(m), C.c_void_p(md), self.engine, C.c_void_p(0)))
        return m

    def execute(self, primitive: C.c_void_p, args: list[tuple[int, C.c_void_p, paddle.Tensor | int]]) -> None:
        packed = (_ExecArg * len(args))()
        for i, (arg, memory, tensor) in enumerate(args):  # a tensor, or an address inside one
            self.lib.dnnl_memory_set_data_handle(memory, tensor if isinstance(tensor, int) else tensor.data_ptr())
            packed[i] = _ExecArg(arg, memory)
        self.check(self.lib.dnnl_primitive_execute(primitive, self.stream, len(args), packed))

    def empty(self, md: int) -> paddle.Tensor:
        """A Paddle-allocated buffer big enough for ``md`` (so Paddle's allocator owns all memory)."""
        return empty([(self.lib.dnnl_memory_desc_get_size(md) + 3) // 4])


def empty(shape: list[int], dtype=paddle.float32) -> paddle.Tensor:
    """``paddle.empty`` without its Python argument handling: the plans allocate a few hundred
    buffers a step, and the wrapper cost as much as the allocation (docs/speed.md)."""
    return paddle._C_ops.empty(shape, dtype, paddle.CPUPlace())


def paddle_dtype(dtype: int):
    """The Paddle dtype of a oneDNN data type (f32 or bf16)."""
    return paddle.bfloat16 if dtype == _BF16 else paddle.float32


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

    Inside a bfloat16 chain (channels-last only) the caller's activations are bfloat16 too:
    ``x_bf16`` (the input, and so its gradient) and ``y_bf16`` (the output, and so its
    upstream gradient), read and written as they are, without a converting reorder.
    """

    def __init__(self, dnnl: Dnnl, x_shape: list[int], w_shape: list[int], bias: bool,
                 stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                 groups: int, blocked: bool, bf16: bool = False, nhwc: bool = False,
                 x_bf16: bool = False, y_bf16: bool = False) -> None:
        """``x_shape`` is the logical [N, C, H, W]; with ``nhwc`` the tensors are channels-last
        ([N, H, W, C] in Paddle) and the activations stay so inside oneDNN: only the weights
        (and, in bf16, a type conversion) are reordered."""
        n, _, h, w = x_shape
        co, ci_g, kh, kw = w_shape
        out_hw = [(size + 2 * p - d * (k - 1) - 1) // s + 1
                  for size, p, d, k, s in zip((h, w), padding, dilation, (kh, kw), stride)]
        self.dnnl, self.has_bias = dnnl, bias
        y_shape = [n, co, *out_hw]
        self.shapes = {"x": x_shape, "w": w_shape, "b": [co], "y": y_shape}
        if nhwc:
            self.shapes.update(x=[n, h, w, x_shape[1]], y=[n, *out_hw, co])
        w_dims, w_tag = (w_shape, _TAG_NCHW) if groups == 1 else ([groups, co // groups, ci_g, kh, kw], _TAG_GOIHW)
        def act(shape, dtype=_F32):
            return dnnl.activation_desc(shape, nhwc, dtype)

        if (x_bf16 or y_bf16) and not (bf16 and nhwc):
            raise ValueError("bfloat16 activations need a bf16 channels-last plan")
        x_type, y_type = (_BF16 if x_bf16 else _F32), (_BF16 if y_bf16 else _F32)
        self.dtypes = {"x": paddle_dtype(x_type), "y": paddle_dtype(y_type), "w": paddle.float32,
                       "b": paddle.float32}
        self.plain = {"x": act(x_shape, x_type), "w": dnnl.memory_desc(w_dims, w_tag),
                      "b": dnnl.memory_desc([co], _TAG_A), "y": act(y_shape, y_type)}
        dims = {"x": x_shape, "w": w_dims, "y": y_shape}
        low = _BF16 if bf16 else _F32
        if nhwc:  # activations as they are (bf16: converted, same layout); weights as oneDNN likes
            out = {"x": C.c_void_p(self.plain["x"]), "y": C.c_void_p(self.plain["y"]),
                   "w": C.c_void_p(dnnl.memory_desc(w_dims, _TAG_ANY))}
            mul = {"x": C.c_void_p(act(x_shape, low)), "y": C.c_void_p(act(y_shape, low)),
                   "w": C.c_void_p(dnnl.memory_desc(w_dims, _TAG_ANY, low))} if bf16 else out
        elif blocked:  # outputs and gradients in float32, the multiplied operands in ``low``
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
        self.implementations = {"forward": impl_name(dnnl, fwd), "backward_data": impl_name(dnnl, bwd_data),
                                "backward_weights": impl_name(dnnl, bwd_weights)}
        # A bf16 channels-last convolution's weight gradient is one matrix product over its
        # M = N*Ho*Wo output pixels, dW = dy[M, co]^T @ cols[M, kh*kw*ci] (_WeightGradientMatmul).
        # Where oneDNN has no brgemm backward-weights kernel for this CPU (AVX512-BF16: its older
        # JIT one, which also writes a blocked gradient to be reordered), its brgemm matmul is the
        # faster of the two for 1x1 stride-1 convolutions on small maps (cols is the input the
        # other passes already hold) and for strided ones on small outputs (the JIT kernel is at
        # its slowest there; cols gathered first). Elsewhere the JIT kernel is the faster
        # (docs/speed.md: ResNet-50's weight gradients).
        self.weights_matmul = None
        m = n * out_hw[0] * out_hw[1]
        strided = stride != (1, 1) and m <= GATHER_PIXELS
        if (bf16 and nhwc and not bias and groups == 1 and dilation == (1, 1)
                and self.implementations["backward_weights"].startswith("jit_bf16")
                and (strided or ((kh, kw) == (1, 1) and stride == (1, 1) and m <= MATMUL_PIXELS))):
            try:
                self.weights_matmul = _WeightGradientMatmul(dnnl, x_shape, w_shape, stride, padding, out_hw)
                self.implementations["backward_weights"] = self.weights_matmul.name
            except RuntimeError:  # a tap's window that oneDNN does not take as one strided block
                pass              # (on odd maps: its rows overrun an image's size); the conv kernel
        self._reorders: dict[tuple[int, int], _Reorder] = {}
        self._plain_cache: dict[tuple[str, int], bool] = {}
        # bf16: the forward's bfloat16 input is kept for backward-weights when that pass reads
        # the same layout (one converting reorder less, and half the memory of the float32 input
        # it replaces). Deriving every bfloat16 layout from the forward's copies instead of from
        # the float32 originals was measured and did not help (docs/speed.md).
        self.keep_x = bf16 and (self.weights_matmul is not None or dnnl.lib.dnnl_memory_desc_equal(
            self.fwd["md"]["x"], self.bwd_weights["md"]["x"]) == 1)
        # Likewise the forward's bfloat16 weights for backward-data: one conversion of the
        # float32 weights a step; where backward-data wants another layout, a bfloat16 ->
        # bfloat16 relayout of that copy (half the bytes read of a conversion).
        self.keep_w = bf16
        self.w_shared = dnnl.lib.dnnl_memory_desc_equal(self.fwd["md"]["w"], self.bwd_data["md"]["w"]) == 1
        # Backward-weights reads the upstream gradient as backward-data does (one reorder) when so.
        self.dy_shared = dnnl.lib.dnnl_memory_desc_equal(
            self.bwd_weights["md"]["dy"], self.bwd_data["md"]["dy"]) == 1

    def _pass(self, pd: C.c_void_p, mds: dict[str, int]) -> dict:
        return {"primitive": self.dnnl.primitive(pd), "md": mds,
                "mem": {k: self.dnnl.memory(md) for k, md in mds.items()}}

    def _reorder(self, tensor: paddle.Tensor, src_md: int, dst_md: int, out: paddle.Tensor) -> paddle.Tensor:
        key = (src_md, dst_md)
        if key not in self._reorders:
            self._reorders[key] = _Reorder(self.dnnl, src_md, dst_md)
        return self._reorders[key](tensor, out)

    def is_plain(self, kind: str, md: int) -> bool:
        """Whether a primitive's ``md`` for ``kind`` is the Paddle tensor's own layout."""
        key = (kind, md)
        if key not in self._plain_cache:
            self._plain_cache[key] = self.dnnl.lib.dnnl_memory_desc_equal(self.plain[kind], md) == 1
        return self._plain_cache[key]

    def to_pass(self, tensor: paddle.Tensor, kind: str, md: int) -> paddle.Tensor:
        """A Paddle-layout tensor in the layout ``md`` a primitive wants (itself if already so)."""
        if self.is_plain(kind, md):
            return tensor
        return self._reorder(tensor, self.plain[kind], md, self.dnnl.empty(md))

    def output(self, kind: str, md: int) -> paddle.Tensor:
        """The buffer a primitive writes ``kind`` into: the Paddle tensor itself where the layouts agree."""
        return empty(self.shapes[kind], self.dtypes[kind]) if self.is_plain(kind, md) else self.dnnl.empty(md)

    def from_pass(self, tensor: paddle.Tensor, kind: str, md: int) -> paddle.Tensor:
        """What :meth:`output` gave, as the Paddle tensor."""
        if self.is_plain(kind, md):
            return tensor
        return self._reorder(tensor, md, self.plain[kind], empty(self.shapes[kind], self.dtypes[kind]))

    def run(self, which: dict, **tensors: paddle.Tensor) -> None:
        args = {"x": _ARG_SRC, "w": _ARG_WEIGHTS, "b": _ARG_BIAS, "y": _ARG_DST,
                "dx": _ARG_DIFF_SRC, "dw": _ARG_DIFF_WEIGHTS, "db": _ARG_DIFF_BIAS, "dy": _ARG_DIFF_DST}
        self.dnnl.execute(which["primitive"], [(args[k], which["mem"][k], t) for k, t in tensors.items()])

    def forward(self, x: paddle.Tensor, w: paddle.Tensor, b: paddle.Tensor | None) -> tuple:
        """(y, x_keep, w_keep): the output and what :meth:`backward` takes as ``x`` and ``w``
        (see ``keep_x``, ``keep_w``)."""
        md = self.fwd["md"]
        y = self.output("y", md["y"])
        extra = {} if b is None else {"b": b}
        x_pass, w_pass = self.to_pass(x, "x", md["x"]), self.to_pass(w, "w", md["w"])
        self.run(self.fwd, x=x_pass, w=w_pass, y=y, **extra)
        return (self.from_pass(y, "y", md["y"]), x_pass if self.keep_x else x,
                w_pass if self.keep_w else w)

    def backward(self, x: paddle.Tensor, w: paddle.Tensor, dy: paddle.Tensor,
                 need_dx: bool, need_weights: bool) -> tuple:
        """(dx, dw, db): dx only if ``need_dx``, dw and db (None without bias) if ``need_weights``.

        ``x`` and ``w`` are the forward's ``x_keep`` and ``w_keep``.
        """
        dx = dw = db = None
        dy_data = self.to_pass(dy, "y", self.bwd_data["md"]["dy"])
        if need_dx:
            md = self.bwd_data["md"]
            dx = self.output("x", md["dx"])
            if not self.keep_w:
                w = self.to_pass(w, "w", md["w"])
            elif not self.w_shared:
                w = self._reorder(w, self.fwd["md"]["w"], md["w"], self.dnnl.empty(md["w"]))
            self.run(self.bwd_data, dy=dy_data, w=w, dx=dx)
            dx = self.from_pass(dx, "x", md["dx"])
        if need_weights and self.weights_matmul is not None and (  # the switch: bench/ab_switch.py
                self.weights_matmul.cols is None or os.environ.get("TOWERNET_WEIGHTS_GATHER", "1") != "0"):
            dw = self.weights_matmul(x, dy_data)
        elif need_weights:
            md = self.bwd_weights["md"]
            dw = self.output("w", md["dw"])
            extra = {}
            if self.has_bias:  # the primitive writes the bias gradient whenever it has a bias
                db = extra["db"] = empty(self.shapes["b"])
            self.run(self.bwd_weights, x=x if self.keep_x else self.to_pass(x, "x", md["x"]), dw=dw,
                     dy=dy_data if self.dy_shared else self.to_pass(dy, "y", md["dy"]), **extra)
            dw = self.from_pass(dw, "w", md["dw"])
        return dx, dw, db


class _WeightGradientMatmul:
    """A bf16 channels-last convolution's weight gradient (groups 1, dilation 1, no bias) on
    oneDNN's matmul: dW[co, (i, j, c)] = sum over the M output pixels of dy[m, co] * cols[m, (i, j, c)].

    ``cols[m, (i, j, c)]`` is the input pixel that kernel tap (i, j) reads for output pixel m,
    channel c, or 0 where the tap falls on padding: an im2col. For a 1x1 stride-1 convolution
    it is the input itself. Otherwise one bf16 reorder per tap copies the tap's valid window
    into a buffer the plan keeps; the windows are the same every call, so the entries that
    stand for padding are never written and stay zero. The product comes out [co, kh, kw, ci],
    reordered to Paddle's [co, ci, kh, kw] (a 1x1 one is in it already).
    """

    def __init__(self, dnnl: Dnnl, x_shape: list[int], w_shape: list[int], stride: tuple[int, int],
                 padding: tuple[int, int], out_hw: list[int]) -> None:
        n, ci, h, w = x_shape
        co, _, kh, kw = w_shape
        (sh, sw), (ph, pw), (ho, wo) = stride, padding, out_hw
        m, k = n * ho * wo, kh * kw * ci
        self.dnnl, self.w_shape = dnnl, w_shape
        self.cols, self.taps = None, []
        if (kh, kw, sh, sw, ph, pw) != (1, 1, 1, 1, 0, 0):
            self.cols = paddle.zeros([m, k], paddle.bfloat16)
            for i in range(kh):
                for j in range(kw):
                    # output rows whose tap i reads a row of x: 0 <= r*sh + i - ph < h
                    r0, r1 = -((i - ph) // sh), min(ho, (h - 1 + ph - i) // sh + 1)
                    c0, c1 = -((j - pw) // sw), min(wo, (w - 1 + pw - j) // sw + 1)
                    r0, c0 = max(r0, 0), max(c0, 0)
                    if r1 <= r0 or c1 <= c0:
                        continue  # this tap reads padding only
                    window = [n, r1 - r0, c1 - c0, ci]
                    src = dnnl.strided_desc(window, [h * w * ci, sh * w * ci, sw * ci, 1], _BF16)
                    dst = dnnl.strided_desc(window, [ho * wo * k, wo * k, k, 1], _BF16)
                    src_at = ((r0 * sh + i - ph) * w + c0 * sw + j - pw) * ci * 2  # bytes
                    dst_at = ((r0 * wo + c0) * k + (i * kw + j) * ci) * 2
                    self.taps.append((_Reorder(dnnl, src, dst), src_at, dst_at))
        mds = {"dy": dnnl.strided_desc([co, m], [1, co], _BF16),
               "cols": dnnl.strided_desc([m, k], [k, 1], _BF16),
               "dw": dnnl.strided_desc([co, k], [k, 1], _F32)}
        pd = _matmul(dnnl, mds["dy"], mds["cols"], mds["dw"])
        self.primitive, self.mem = dnnl.primitive(pd), {name: dnnl.memory(md) for name, md in mds.items()}
        self.name = ("matmul " if self.cols is None else "gather + matmul ") + impl_name(dnnl, pd)
        self.to_oihw = None
        if (kh, kw) != (1, 1):
            self.to_oihw = _Reorder(dnnl, dnnl.strided_desc(w_shape, [k, 1, kw * ci, ci], _F32),
                                    dnnl.memory_desc(w_shape, _TAG_NCHW))

    def __call__(self, x: paddle.Tensor, dy: paddle.Tensor) -> paddle.Tensor:
        """dW in Paddle's layout from the bf16 channels-last input and upstream gradient."""
        cols = x
        if self.cols is not None:
            cols, x_at, cols_at = self.cols, x.data_ptr(), self.cols.data_ptr()
            for reorder, src_at, dst_at in self.taps:
                self.dnnl.execute(reorder.primitive, [(_ARG_SRC, reorder.src, x_at + src_at),
                                                      (_ARG_DST, reorder.dst, cols_at + dst_at)])
        dw = empty(self.w_shape)
        out = dw if self.to_oihw is None else empty(self.w_shape)
        self.dnnl.execute(self.primitive, [(_ARG_SRC, self.mem["dy"], dy), (_ARG_WEIGHTS, self.mem["cols"], cols),
                                           (_ARG_DST, self.mem["dw"], out)])
        return dw if self.to_oihw is None else self.to_oihw(out, dw)


def _matmul(dnnl: Dnnl, a: int, b: int, c: int) -> C.c_void_p:
    """The primitive descriptor of ``c = a @ b`` for these memory descriptors (no bias)."""
    pd = C.c_void_p()
    dnnl.check(dnnl.lib.dnnl_matmul_primitive_desc_create(
        C.byref(pd), dnnl.engine, C.c_void_p(a), C.c_void_p(b), C.c_void_p(0), C.c_void_p(c), C.c_void_p(0)))
    return pd


class MaxPoolPlan:
    """Max-pool forward (with the argmax workspace) and backward, plain NCHW (or NHWC) in and out."""

    def __init__(self, dnnl: Dnnl, x_shape: list[int], kernel: tuple[int, int],
                 stride: tuple[int, int], padding: tuple[int, int], nhwc: bool = False,
                 bf16: bool = False) -> None:
        n, c, h, w = x_shape  # logical; with ``nhwc`` the tensors are [N, H, W, C]
        out_hw = [(size + 2 * p - k) // s + 1 for size, p, k, s in zip((h, w), padding, kernel, stride)]
        y_shape = [n, c, *out_hw]
        self.dnnl, self.x_shape, self.y_shape = dnnl, x_shape, y_shape
        if nhwc:
            self.x_shape, self.y_shape = [n, h, w, c], [n, *out_hw, c]
        dtype = _BF16 if bf16 else _F32
        self.dtype = paddle_dtype(dtype)
        x, y = (C.c_void_p(dnnl.activation_desc(shape, nhwc, dtype)) for shape in (x_shape, y_shape))
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

    def forward(self, x: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        y, workspace = empty(self.y_shape, self.dtype), self.dnnl.empty(self.workspace_md)
        self.dnnl.execute(self.fwd, [(_ARG_SRC, self.x, x), (_ARG_DST, self.y, y),
                                     (_ARG_WORKSPACE, self.workspace, workspace)])
        return y, workspace

    def backward(self, dy: paddle.Tensor, workspace: paddle.Tensor) -> paddle.Tensor:
        dx = empty(self.x_shape, self.dtype)
        self.dnnl.execute(self.bwd, [(_ARG_DIFF_DST, self.y, dy), (_ARG_DIFF_SRC, self.x, dx),
                                     (_ARG_WORKSPACE, self.workspace, workspace)])
        return dx


class BatchNormPlan:
    """Batch normalisation of channels-last [N, H, W, C] float32, optionally with the ReLU fused.

    Training: ``forward`` normalises with the batch's mean and biased variance and returns
    them (the caller updates the running statistics); ``backward`` gives the gradients of
    the input, scale and shift (the ReLU's mask comes from the forward's workspace).
    Inference: ``infer`` normalises with given (running) statistics.
    ``bf16``: the map and its gradients are bfloat16 (oneDNN reads and writes one data type
    for both), the statistics, scale, shift and their gradients float32.
    """

    def __init__(self, dnnl: Dnnl, shape: list[int], epsilon: float, relu: bool, bf16: bool = False) -> None:
        n, h, w, c = shape
        self.dnnl, self.shape, self.channels = dnnl, shape, c
        self.dtype = paddle.bfloat16 if bf16 else paddle.float32
        lib, none = dnnl.lib, C.c_void_p(0)
        x = C.c_void_p(dnnl.activation_desc([n, c, h, w], nhwc=True, dtype=_BF16 if bf16 else _F32))
        flags = _USE_SCALE | _USE_SHIFT | (_FUSE_NORM_RELU if relu else 0)
        fwd, bwd, inf = C.c_void_p(), C.c_void_p(), C.c_void_p()
        create = lib.dnnl_batch_normalization_forward_primitive_desc_create
        dnnl.check(create(C.byref(fwd), dnnl.engine, _FORWARD_TRAINING, x, x, epsilon, flags, none))
        dnnl.check(create(C.byref(inf), dnnl.engine, _FORWARD_INFERENCE, x, x, epsilon,
                          flags | _USE_GLOBAL_STATS, none))
        dnnl.check(lib.dnnl_batch_normalization_backward_primitive_desc_create(
            C.byref(bwd), dnnl.engine, _BACKWARD, x, x, x, epsilon, flags, fwd, none))
        self.workspace_md = lib.dnnl_primitive_desc_query_md(fwd, _Q_WORKSPACE, 0) if relu else None
        self.fwd, self.bwd, self.inf = dnnl.primitive(fwd), dnnl.primitive(bwd), dnnl.primitive(inf)
        vec = dnnl.memory_desc([c], _TAG_A)
        self.mem = {k: dnnl.memory(x.value) for k in ("x", "y", "dx", "dy")}
        self.mem.update({k: dnnl.memory(vec) for k in ("mean", "var", "scale", "shift", "dscale", "dshift")})
        if relu:
            self.mem["ws"] = dnnl.memory(self.workspace_md)

    def _args(self, **tensors: paddle.Tensor) -> list:
        ids = {"x": _ARG_SRC, "y": _ARG_DST, "dx": _ARG_DIFF_SRC, "dy": _ARG_DIFF_DST, "mean": _ARG_MEAN,
               "var": _ARG_VARIANCE, "scale": _ARG_SCALE, "shift": _ARG_SHIFT, "dscale": _ARG_DIFF_SCALE,
               "dshift": _ARG_DIFF_SHIFT, "ws": _ARG_WORKSPACE}
        return [(ids[k], self.mem[k], t) for k, t in tensors.items()]

    def forward(self, x: paddle.Tensor, scale: paddle.Tensor, shift: paddle.Tensor) -> tuple:
        """(y, batch mean, batch biased variance, ReLU workspace or None)."""
        y, mean, var = empty(self.shape, self.dtype), empty([self.channels]), empty([self.channels])
        extra = {"ws": self.dnnl.empty(self.workspace_md)} if self.workspace_md else {}
        self.dnnl.execute(self.fwd, self._args(x=x, y=y, mean=mean, var=var, scale=scale, shift=shift, **extra))
        return y, mean, var, extra.get("ws")

    def backward(self, x, dy, mean, var, scale, workspace) -> tuple:
        """(dx, dscale, dshift)."""
        dx = empty(self.shape, self.dtype)
        dscale, dshift = empty([self.channels]), empty([self.channels])
        extra = {"ws": workspace} if workspace is not None else {}
        self.dnnl.execute(self.bwd, self._args(x=x, dy=dy, mean=mean, var=var, scale=scale, dx=dx,
                                               dscale=dscale, dshift=dshift, **extra))
        return dx, dscale, dshift

    def infer(self, x, mean, var, scale, shift) -> paddle.Tensor:
        y = empty(self.shape, self.dtype)
        self.dnnl.execute(self.inf, self._args(x=x, y=y, mean=mean, var=var, scale=scale, shift=shift))
        return y


class AddPlan:
    """``a + b`` of two tensors of ``numel`` elements and one dtype (float32 or, ``bf16``,
    bfloat16) in the same memory order (any shape or layout: oneDNN sees them flat), on
    oneDNN's binary add (multithreaded, one pass): the gradient sum of
    :func:`backend.onednn.fork`. ``out`` may be ``a``."""

    def __init__(self, dnnl: Dnnl, numel: int, bf16: bool = False, attr: C.c_void_p | None = None) -> None:
        self.dnnl = dnnl
        self.dtype = paddle.bfloat16 if bf16 else paddle.float32
        self.flat = C.c_void_p(dnnl.memory_desc([numel], _TAG_A, _BF16 if bf16 else _F32))
        add = C.c_void_p()
        dnnl.check(dnnl.lib.dnnl_binary_primitive_desc_create(C.byref(add), dnnl.engine, _BINARY_ADD, self.flat,
                                                              self.flat, self.flat, attr or C.c_void_p(0)))
        self.fwd = dnnl.primitive(add)
        self.mem = [dnnl.memory(self.flat.value) for _ in range(3)]

    def __call__(self, a: paddle.Tensor, b: paddle.Tensor, out: paddle.Tensor | None = None) -> paddle.Tensor:
        out = empty(a.shape, self.dtype) if out is None else out
        self.dnnl.execute(self.fwd, [(_ARG_SRC, self.mem[0], a), (_ARG_SRC_1, self.mem[1], b),
                                     (_ARG_DST, self.mem[2], out)])
        return out


class AddReluPlan(AddPlan):
    """``relu(a + b)`` (:class:`AddPlan` with the ReLU as a post-op: one pass, read a and b,
    write y; Paddle's add then ReLU makes two), and its backward ``dy * (y > 0)``, the ReLU's
    backward from its output."""

    def __init__(self, dnnl: Dnnl, numel: int, bf16: bool = False) -> None:
        lib, none = dnnl.lib, C.c_void_p(0)
        post_ops, attr = C.c_void_p(), C.c_void_p()
        dnnl.check(lib.dnnl_post_ops_create(C.byref(post_ops)))
        dnnl.check(lib.dnnl_post_ops_append_eltwise(post_ops, _ELTWISE_RELU, 0.0, 0.0))
        dnnl.check(lib.dnnl_primitive_attr_create(C.byref(attr)))
        dnnl.check(lib.dnnl_primitive_attr_set_post_ops(attr, post_ops))
        super().__init__(dnnl, numel, bf16, attr)
        flat, relu, relu_bwd = self.flat, C.c_void_p(), C.c_void_p()
        dnnl.check(lib.dnnl_eltwise_forward_primitive_desc_create(  # the backward's hint only
            C.byref(relu), dnnl.engine, _FORWARD_TRAINING, _ELTWISE_RELU_USE_DST, flat, flat, 0.0, 0.0, none))
        dnnl.check(lib.dnnl_eltwise_backward_primitive_desc_create(
            C.byref(relu_bwd), dnnl.engine, _ELTWISE_RELU_USE_DST, flat, flat, flat, 0.0, 0.0, relu, none))
        self.bwd = dnnl.primitive(relu_bwd)

    def forward(self, a: paddle.Tensor, b: paddle.Tensor) -> paddle.Tensor:
        return self(a, b)

    def backward(self, y: paddle.Tensor, dy: paddle.Tensor) -> paddle.Tensor:
        dx = empty(y.shape, self.dtype)
        self.dnnl.execute(self.bwd, [(_ARG_DST, self.mem[0], y), (_ARG_DIFF_DST, self.mem[1], dy),
                                     (_ARG_DIFF_SRC, self.mem[2], dx)])
        return dx


def impl_name(dnnl: Dnnl, pd: C.c_void_p) -> str:
    name = C.c_char_p()
    dnnl.lib.dnnl_primitive_desc_query(pd, _Q_IMPL_INFO, 0, C.byref(name))
    return (name.value or b"").decode()


