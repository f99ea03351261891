"""Convolutions and max-pools on the oneDNN inside the Paddle wheel, for dygraph on CPU.

Paddle 3.3.1's dygraph CPU conv is a per-sample im2col + MKL GEMM with single-threaded
im2col/col2im, and its max-pool is single-threaded; its oneDNN kernels run only in
static-graph programs, where TowerNet cannot train (docs/speed.md). This module calls the
wheel's own ``libs/libdnnl.so.3`` (oneDNN 3.6) through its C API with ``ctypes``, much as
PyTorch's CPU conv goes through ideep: the input is reordered into oneDNN's blocked layout,
the JIT convolution runs, the result is reordered back to NCHW. On a 2-core AVX-512 machine,
batch 32, TowerNet's convs (forward + both backwards) are 1.4-1.6x faster than Paddle's and
its max-pools 1.6-2.8x (bench/kernels.py); TowerNet-SimAM trains ~1.3x faster, ResNet50
1.2-1.4x and MobileNetV2 3.1-3.4x (docs/speed.md). Convs take bias, stride, padding,
dilation and groups.

Channels-last (NHWC). Convs and max-pools also take NHWC tensors, which oneDNN reads
and writes as they are (``acdb`` memory): no activation reorders, only the weights are
reordered into the layout the JIT kernel wants. :func:`batch_norm` runs an NHWC BatchNorm2D on
oneDNN's batch-normalisation primitive with the ReLU fused into it (forward and backward;
Paddle's CPU BatchNorm and ReLU are 3.5-4.4x slower on these shapes, docs/speed.md). A model
built with ``data_format="NHWC"`` (TowerNet) therefore runs conv -> BN+ReLU -> pool chains
without leaving channels-last; ``train.channels_last: auto`` picks it on a CPU. A residual
block's end ``relu(bn3(x) + identity)`` runs as one oneDNN binary add with the ReLU fused
(:func:`add_relu`; half the passes over the data of Paddle's add and ReLU, bit-identical).
oneDNN's BN fuses no ReLU6: MobileNetV2's BN -> ReLU6 pairs train on a small C kernel of
:mod:`backend.fused` instead (one pass each way; built at first use, optional).

Same maths as ``F.conv2d`` / ``F.max_pool2d``: conv sums run in another order, so results
differ in the last bits (relative 1e-6); the pool's values and gradients are identical, ties
included (tests/test_onednn.py, tests/test_speed_equivalence.py). Conv inputs with fewer than
``PLAIN_BELOW`` channels (an RGB stem) stay in plain NCHW, where oneDNN's GEMM convolution is
the faster one.

:func:`conv2d` and :func:`max_pool2d` fall back to Paddle where this path does not apply: no
libdnnl (a Paddle build without it, a GPU, a non-x86 machine), a dtype other than float32,
padding given as a string or per side, ceil mode, static graph (``paddle.jit`` export), a
geometry oneDNN refuses, or ``TOWERNET_ONEDNN=0`` in the environment. No compiler is needed:
``backend/_dnnl.py`` binds the C API with ``ctypes`` (only the optional BN + ReLU6 kernel of
:mod:`backend.fused` is compiled, at first use). Primitives are built once per input shape
and kept for the process (a few per layer: train and eval batch sizes, the last partial
batch). All buffers, blocked copies included, come from Paddle's allocator.

bfloat16 training (``train.amp=bf16`` on a CPU with ``amx_bf16`` or ``avx512_bf16``;
:func:`set_bf16_training`). Paddle 3.3.1 has no CPU bfloat16 conv kernel and its autocast
does nothing on a CPU, so precision is chosen here, per op, after PyTorch's CPU autocast lists:

- bfloat16 multiplies, float32 accumulation: the convolutions with ``groups == 1`` and, in
  NCHW, at least ``PLAIN_BELOW`` input channels (channels-last: the RGB stem too), forward,
  backward-data and backward-weights. The weights are converted once a step (backward-data
  relayouts the forward's bfloat16 copy); weight gradients come back float32 (1x1 stride-1
  ones on small maps, and strided ones on small outputs, from oneDNN's matmul where the CPU
  has no brgemm backward-weights kernel: ``_dnnl.ConvPlan``).
- bfloat16 chains (channels-last). A conv whose layer has ``bf16_chain`` set (the model says
  its output goes only to this module's BN: TowerNet's BasicConv2d, ResNet's bottleneck and stem)
  writes bfloat16; the BN after it normalises bfloat16 maps with float32 statistics, scale
  and shift (oneDNN's BN reads and writes one data type), the ReLU fused; the max-pool, the
  residual add + ReLU (:func:`add_relu`), Inception's :func:`concat`, the gradient sums of
  :func:`fork` and the next conv take it as it is, and the gradients flow back in bfloat16
  the same way. So no activation or upstream gradient is converted between these ops (before,
  every conv converted its input and upstream gradient and wrote float32). A chain ends, in
  float32, wherever an op outside this module follows: attention modules
  (``models.attention.attend``), the global pool before the classifier, BN + ReLU6, a frozen
  BN, Paddle's own kernels (:func:`to_float32`: Paddle 3.3.1 registers no CPU bfloat16 add,
  ReLU, pool, mean or concat backward). ``TOWERNET_BF16_CHAINS=0``: no chains and a float32
  stem, the bf16 numerics before the chains (float32 maps between bf16 convolutions).
- float32, on purpose: depthwise and grouped convs (memory-bound; PyTorch's bf16 MobileNetV2
  trains slower than its fp32 here, 157 vs 180 img/s, docs/speed.md), so MobileNetV2 has no
  chains; batch statistics, SimAM and the other attention statistics, softmax and the loss
  (reductions and exponentials that bfloat16's 8-bit mantissa would bias); the classifier's
  matmul (under 0.5% of a step at these class counts); the optimizer and its master weights.
- Passes that record no gradient (evaluation, prediction, export) stay float32, so a bf16
  run's eval accuracy and checkpoints are float32 results.
"""
from __future__ import annotations

import math
import os

import paddle
import paddle.nn.functional as F
from paddle import nn
from paddle.autograd import PyLayer

from . import fused as _fused
from ._dnnl import AddPlan as _AddPlan
from ._dnnl import AddReluPlan as _AddReluPlan
from ._dnnl import BatchNormPlan as _BatchNormPlan
from ._dnnl import ConvPlan as _ConvPlan
from ._dnnl import Dnnl as _Dnnl
from ._dnnl import MaxPoolPlan as _MaxPoolPlan

PLAIN_BELOW = 8
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs that multiply bfloat16

_DNNL: _Dnnl | None = None
_LOAD_ERROR: str | None = None
# None: oneDNN refused this geometry
_PLANS: dict[tuple, _ConvPlan | _MaxPoolPlan | _BatchNormPlan | _AddPlan | None] = {}
_PLAN_ARGS: dict[tuple, tuple] = {}  # what each plan was built from (bench/onednn_kernels.py rebuilds it elsewhere)
_BF16_TRAINING = False


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


def cpu_bf16_flags() -> list[str]:
    """The bfloat16 flags of :data:`BF16_FLAGS` this CPU reports in /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    return [flag for flag in BF16_FLAGS if flag in flags]


def set_bf16_training(on: bool) -> None:
    """Run the convolutions of gradient-recording passes in bfloat16 (see :func:`conv2d`)."""
    global _BF16_TRAINING
    _BF16_TRAINING = on


class _OneDnnConv2D(PyLayer):
    @staticmethod
    def forward(ctx, x, weight, bias, plan):
        # A PyLayer must return None for every input that takes no gradient (frozen layers).
        ctx.plan, ctx.has_bias = plan, bias is not None
        ctx.needs = [not t.stop_gradient for t in (x, weight) + ((bias,) if ctx.has_bias else ())]
        y, x_keep, w_keep = plan.forward(x, weight, bias)
        ctx.save_for_backward(x_keep, w_keep)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensor()
        grads = ctx.plan.backward(x, weight, dy.contiguous(), ctx.needs[0], any(ctx.needs[1:]))
        return tuple(g if need else None for g, need in zip(grads, ctx.needs))


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


def _logical_shape(x: paddle.Tensor, nhwc: bool) -> list[int]:
    """``x``'s [N, C, H, W] whichever layout it is stored in."""
    return [x.shape[0], x.shape[3], x.shape[1], x.shape[2]] if nhwc else list(x.shape)


def conv2d(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor | None = None,
           stride=1, padding=0, dilation=1, groups: int = 1, data_format: str = "NCHW",
           bf16_out: bool = False) -> paddle.Tensor:
    """``F.conv2d`` for NCHW or NHWC float32 with symmetric int padding, on oneDNN when :func:`available`.

    NHWC activations stay channels-last inside oneDNN (no activation reorders). After
    ``set_bf16_training(True)``, convolutions that record gradients multiply in bfloat16
    (see the module doc for which); evaluation (no grad) stays float32. There, a channels-last
    conv also takes a bfloat16 ``x`` as it is, and with ``bf16_out`` (its output goes only to
    ops of this module: a bfloat16 chain, see the module doc) writes a bfloat16 output.
    """
    geometry = _pair(stride), _pair(padding), _pair(dilation)
    plan = None
    nhwc = data_format == "NHWC"
    x_bf16 = x.dtype == paddle.bfloat16
    if (available() and None not in geometry and x.dtype in (paddle.float32, paddle.bfloat16)
            and data_format in ("NCHW", "NHWC") and weight.dtype == paddle.float32 and x.ndim == 4
            and x.place.is_cpu_place()):
        shape = _logical_shape(x, nhwc)
        blocked = shape[1] >= PLAIN_BELOW
        chains = nhwc and os.environ.get("TOWERNET_BF16_CHAINS", "1") != "0"
        bf16 = _BF16_TRAINING and (blocked or chains) and groups == 1 and paddle.is_grad_enabled()
        chain = bf16 and chains
        x_bf16, y_bf16 = x_bf16 and chain, bf16_out and chain
        key = (tuple(shape), tuple(weight.shape), bias is not None, *geometry, groups, bf16, x_bf16, y_bf16, nhwc)
        plan = _plan(key, _ConvPlan, shape, list(weight.shape), bias is not None,
                     *geometry, groups, blocked, bf16, nhwc, x_bf16, y_bf16)
    if plan is None or (x.dtype == paddle.bfloat16 and not x_bf16):
        return F.conv2d(to_float32(x), weight, bias, stride=stride, padding=padding, dilation=dilation,
                        groups=groups, data_format=data_format)
    return _OneDnnConv2D.apply(x.contiguous(), weight.contiguous(), bias, plan)


def to_float32(x: paddle.Tensor) -> paddle.Tensor:
    """``x`` as float32: the end of a bfloat16 chain, where an op outside this module takes over."""
    return x.astype(paddle.float32) if x.dtype == paddle.bfloat16 else x


class _Fork(PyLayer):
    @staticmethod
    def forward(ctx, x, n, plan):
        ctx.plan = plan
        # views of x's memory (no copy), each its own tensor (a reshape returns one object for all)
        return tuple(x._slice(0, x.shape[0]) for _ in range(n))

    @staticmethod
    def backward(ctx, *grads):
        grads = [g.contiguous() for g in grads if g is not None]  # None: a view that took no part
        if len(grads) < 2:
            return grads[0] if grads else None
        total = ctx.plan(grads[0], grads[1])
        for g in grads[2:]:
            ctx.plan(total, g, out=total)
        return total


@paddle.jit.not_to_static
def fork(x: paddle.Tensor, n: int) -> tuple[paddle.Tensor, ...]:
    """``x`` for ``n`` consumers (a residual block's two paths, Inception's four branches),
    whose gradients are summed here on oneDNN. Paddle sums the gradients of a tensor that
    feeds several ops itself, outside oneDNN (``TensorAdd``, for bfloat16 element by element:
    9.5% of a ResNet-50 bf16 step, docs/speed.md); here each consumer gets its own view of
    ``x`` (no copy) and the backward adds their gradients with oneDNN's binary add. Same
    values; sums of more than two gradients may round differently (another order). The
    consumers must not write into their input (none of this module's ops do). No gradient, a
    static graph (export) or no oneDNN: ``x`` ``n`` times.
    """
    if (n > 1 and available() and not x.stop_gradient and paddle.is_grad_enabled()
            and x.dtype in (paddle.float32, paddle.bfloat16) and x.place.is_cpu_place()):
        numel = math.prod(x.shape)
        bf16 = x.dtype == paddle.bfloat16
        plan = _plan(("add", numel, bf16), _AddPlan, numel, bf16)
        if plan is not None:
            return _Fork.apply(x.contiguous(), n, plan)
    return (x,) * n


class _Concat(PyLayer):
    @staticmethod
    def forward(ctx, axis, *xs):
        ctx.axis, ctx.sizes = axis, [x.shape[axis] for x in xs]
        return paddle.concat(xs, axis=axis)

    @staticmethod
    def backward(ctx, dy):
        return tuple(paddle.split(dy, ctx.sizes, axis=ctx.axis))


@paddle.jit.not_to_static
def concat(xs: list[paddle.Tensor], axis: int) -> paddle.Tensor:
    """``paddle.concat(xs, axis)``, also for bfloat16 maps in a chain (Paddle 3.3.1 registers a
    CPU bfloat16 concat, but not its backward: here that is a split, which it has)."""
    if all(x.dtype == paddle.bfloat16 for x in xs) and paddle.in_dynamic_mode():
        return _Concat.apply(axis, *xs)
    return paddle.concat([to_float32(x) for x in xs], axis=axis)


def _plan(key: tuple, build, *args):
    """The cached plan for ``key``, built on first use; None if oneDNN refuses the geometry."""
    if key not in _PLANS:
        _PLAN_ARGS[key] = args
        try:
            _PLANS[key] = build(_DNNL, *args)
        except RuntimeError:  # a status other than success: leave this shape to Paddle
            _PLANS[key] = None
    return _PLANS[key]


def max_pool2d(x: paddle.Tensor, kernel_size, stride=None, padding=0, data_format: str = "NCHW") -> paddle.Tensor:
    """``F.max_pool2d`` (NCHW or NHWC, floor mode, int padding), on oneDNN when :func:`available`.

    The gradient goes to the first maximum of each window, as in ``F.max_pool2d``
    (ties included; tests/test_onednn.py).
    """
    geometry = _pair(kernel_size), _pair(kernel_size if stride is None else stride), _pair(padding)
    plan = None
    nhwc = data_format == "NHWC"
    bf16 = x.dtype == paddle.bfloat16  # inside a chain: pooled as it is
    if (available() and None not in geometry and x.dtype in (paddle.float32, paddle.bfloat16) and x.ndim == 4
            and x.place.is_cpu_place() and data_format in ("NCHW", "NHWC")):
        shape = _logical_shape(x, nhwc)
        plan = _plan(("maxpool", tuple(shape), *geometry, bf16, nhwc), _MaxPoolPlan, shape, *geometry, nhwc, bf16)
    if plan is not None:
        return _OneDnnMaxPool2D.apply(x.contiguous(), plan)
    x = to_float32(x)
    # Where gradients flow in dygraph, Paddle's argmax path: same values and gradient as the
    # plain pool, but its CPU backward scatters through saved indices instead of rescanning
    # each window. Static graphs (export), no-grad evaluation and NHWC (Paddle's argmax pool
    # is NCHW only) take the plain pool.
    if (x.stop_gradient or not paddle.is_grad_enabled() or not paddle.in_dynamic_mode()
            or data_format != "NCHW"):
        return F.max_pool2d(x, kernel_size, stride, padding, data_format=data_format)
    return F.max_pool2d(x, kernel_size, stride, padding, return_mask=True, data_format=data_format)[0]


class _OneDnnBatchNorm(PyLayer):
    """``plan``: a ``_dnnl.BatchNormPlan`` or a ``fused.BatchNormReLU6Plan``."""

    @staticmethod
    def forward(ctx, x, weight, bias, plan, stats):
        y, mean, var, workspace = plan.forward(x, weight, bias)
        stats.extend((mean, var))  # for the caller's running statistics
        ctx.plan, ctx.workspace = plan, workspace
        ctx.needs = [not t.stop_gradient for t in (x, weight, bias)]
        ctx.save_for_backward(x, mean, var, weight)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, mean, var, weight = ctx.saved_tensor()
        grads = ctx.plan.backward(x, dy.contiguous(), mean, var, weight, ctx.workspace)
        return tuple(g if need else None for g, need in zip(grads, ctx.needs))


@paddle.jit.not_to_static  # a static graph (export) takes Paddle's BN below as it is
def batch_norm(x: paddle.Tensor, bn: nn.BatchNorm2D, relu: bool = False, relu6: bool = False) -> paddle.Tensor:
    """``bn(x)``, then ReLU when ``relu`` or ReLU6 when ``relu6``: on oneDNN for NHWC float32
    in dygraph, the ReLU fused; in training, BN + ReLU6 as one kernel (:mod:`backend.fused`,
    channels a multiple of 16; else oneDNN's BN, then Paddle's ReLU6).

    Same maths as Paddle's BatchNorm: batch mean and biased variance in training, running
    statistics updated as ``momentum * running + (1 - momentum) * batch``; running statistics
    in evaluation (or with ``use_global_stats``). Anything else takes ``bn`` and ``F.relu``.
    """
    plan = None
    bf16 = x.dtype == paddle.bfloat16  # from a chained conv: normalised in bfloat16, out bfloat16
    # Paddle's use_global_stats: None = batch statistics in training only; True = running
    # ones always (a frozen backbone); False = batch ones always (left to Paddle here).
    frozen = bn._use_global_stats is True or (bn._use_global_stats is None and not bn.training)
    if bf16 and (frozen or relu6):  # the chain ends here: BN + ReLU6 and frozen BN are float32
        x, bf16 = to_float32(x), False
    if (available() and bn._data_format == "NHWC" and x.ndim == 4 and x.dtype in (paddle.float32, paddle.bfloat16)
            and x.place.is_cpu_place() and paddle.in_dynamic_mode() and bn.weight is not None
            and bn.bias is not None):
        plan = _plan(("bnorm", tuple(x.shape), float(bn._epsilon), relu, bf16), _BatchNormPlan,
                     list(x.shape), float(bn._epsilon), relu, bf16)
    if plan is None or bn._use_global_stats is False or (frozen and paddle.is_grad_enabled()):
        x = to_float32(x)
        # Paddle's BN (also for frozen statistics with gradients: Grad-CAM, a frozen
        # backbone), by its forward: ``bn`` may be this module's BatchNorm2D, whose forward
        # is this function (no forward hooks either way, as on the oneDNN path)
        y = nn.BatchNorm2D.forward(bn, x)
        return F.relu(y) if relu else F.relu6(y) if relu6 else y
    x = x.contiguous()
    if frozen:
        y = plan.infer(x, bn._mean, bn._variance, bn.weight, bn.bias)  # the plan fused any ReLU
        return F.relu6(y) if relu6 else y
    stats = []
    lib = _fused.load() if relu6 and x.shape[-1] % _fused.VECTOR == 0 else None
    if lib is not None:  # BN and ReLU6 in one kernel
        fused_plan = _fused.BatchNormReLU6Plan(lib, float(bn._epsilon))
        y = _OneDnnBatchNorm.apply(x, bn.weight, bn.bias, fused_plan, stats)
    else:
        y = _OneDnnBatchNorm.apply(x, bn.weight, bn.bias, plan, stats)  # the plan fused any ReLU
        y = F.relu6(y) if relu6 else y
    with paddle.no_grad():
        m = bn._momentum
        for running, batch in zip((bn._mean, bn._variance), stats):
            paddle.assign(running * m + batch * (1.0 - m), running)
    return y


class _OneDnnAddRelu(PyLayer):
    @staticmethod
    def forward(ctx, a, b, plan):
        y = plan.forward(a, b)
        ctx.plan = plan
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensor()
        dx = ctx.plan.backward(y, dy.contiguous())
        return dx, dx  # one buffer for both inputs: see add_relu


@paddle.jit.not_to_static  # a static graph (export) takes Paddle's add and ReLU below
def add_relu(a: paddle.Tensor, b: paddle.Tensor) -> paddle.Tensor:
    """``F.relu(a + b)`` for two float32 tensors of one shape: a residual block's end.

    On oneDNN (dygraph, CPU, contiguous): the add with the ReLU fused, forward in one pass
    over the data, backward in one; same values and gradients as Paddle's add and ReLU
    (tests/test_onednn.py). The two inputs receive the same gradient tensor (no copy). That
    is safe where neither input's producer gets another gradient before both have used this
    one, as at a residual block's end: the block input's other gradient (through the first
    conv) only arrives after the residual branch's backward has run. Elsewhere, and in static
    graphs (export), Paddle's add and ReLU.
    """
    if a.dtype != b.dtype:  # one from a bfloat16 chain, one not: added in float32
        a, b = to_float32(a), to_float32(b)
    bf16 = a.dtype == paddle.bfloat16
    if (available() and a.dtype in (paddle.float32, paddle.bfloat16) and a.shape == b.shape
            and a.place.is_cpu_place() and b.place.is_cpu_place() and a.is_contiguous() and b.is_contiguous()
            and paddle.in_dynamic_mode()):
        numel = math.prod(a.shape)
        plan = _plan(("add_relu", numel, bf16), _AddReluPlan, numel, bf16)
        if plan is not None:
            return _OneDnnAddRelu.apply(a, b, plan)
    return F.relu(to_float32(a) + to_float32(b))


class Conv2D(nn.Conv2D):
    """``nn.Conv2D`` whose dygraph CPU forward and backward run on oneDNN (see module doc).

    Same parameters, state-dict keys and maths. :func:`convert` turns a model's ``nn.Conv2D``
    layers into this class in place; static graphs (export) and other devices get ``F.conv2d``
    (:func:`convertible` admits only the layers for which that is ``nn.Conv2D.forward``).
    """

    bf16_chain = False  # set by the model on a conv whose output goes only to ops of this module

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return conv2d(x, self.weight, self.bias, self._stride, self._padding, self._dilation, self._groups,
                      self._data_format, self.bf16_chain)


class MaxPool2D(nn.MaxPool2D):
    """``nn.MaxPool2D`` on oneDNN (see :func:`max_pool2d`); same values and gradients."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return max_pool2d(x, self.ksize, self.stride, self.padding, self.data_format)


class BatchNorm2D(nn.BatchNorm2D):
    """A channels-last ``nn.BatchNorm2D`` on oneDNN (see :func:`batch_norm`); same state."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return batch_norm(x, self)


class BatchNormReLU6(nn.BatchNorm2D):
    """A channels-last ``nn.BatchNorm2D`` and the ``nn.ReLU6`` after it, in one
    (:func:`batch_norm` with ``relu6``); that ReLU6 becomes :class:`ClippedBefore`. Same state."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return batch_norm(x, self, relu6=True)


class BatchNormReLU(nn.BatchNorm2D):
    """A channels-last ``nn.BatchNorm2D`` and the ``nn.ReLU`` after it, in one (:func:`batch_norm`
    with ``relu``); that ReLU becomes :class:`AppliedBefore`. Same state. A model that knows
    the pair (ResNet's stem: ``models.baselines.channels_last``) swaps the classes itself."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return batch_norm(x, self, relu=True)


class AppliedBefore(nn.ReLU):
    """An ``nn.ReLU`` whose work the :class:`BatchNormReLU` before it does: passes its input on."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return x


class ClippedBefore(nn.ReLU6):
    """An ``nn.ReLU6`` whose clip the :class:`BatchNormReLU6` before it applies: passes its input on."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return x


def convertible(layer: nn.Layer) -> bool:
    """Whether :func:`convert` switches ``layer`` (other forms stay with Paddle's kernels)."""
    if type(layer) is nn.Conv2D:
        return (layer._data_format in ("NCHW", "NHWC") and layer._padding_mode == "zeros"
                and None not in (_pair(layer._stride), _pair(layer._padding), _pair(layer._dilation)))
    if type(layer) is nn.BatchNorm2D:  # NCHW stays Paddle's: oneDNN's was no faster there
        return layer._data_format == "NHWC"
    if type(layer) is nn.MaxPool2D:
        return (layer.data_format in ("NCHW", "NHWC") and not layer.ceil_mode and not layer.return_mask
                and None not in (_pair(layer.ksize), _pair(layer.padding))
                and (layer.stride is None or _pair(layer.stride) is not None))
    return False


def convert(model: nn.Layer) -> nn.Layer:
    """Switch ``model``'s plain ``nn.Conv2D`` / ``nn.MaxPool2D`` (and channels-last
    ``nn.BatchNorm2D``) layers to this module's, in place; a channels-last BN followed by an
    ``nn.ReLU6`` in a Sequential becomes :class:`BatchNormReLU6` + :class:`ClippedBefore`.

    The layers keep their identity, parameters and buffers (``__class__`` is swapped: the
    subclasses add no state), so optimizers, checkpoints and hooks see no difference (but for
    a forward hook on a fused BN, which sees the clipped output).
    """
    kinds = ((nn.Conv2D, Conv2D), (nn.MaxPool2D, MaxPool2D), (nn.BatchNorm2D, BatchNorm2D))
    for layer in model.sublayers(include_self=True):
        if convertible(layer):
            layer.__class__ = next(ours for paddles, ours in kinds if isinstance(layer, paddles))
    # A channels-last BN followed by a ReLU6 in a Sequential (MobileNetV2): one layer does both.
    for seq in model.sublayers(include_self=True):
        if isinstance(seq, nn.Sequential):
            layers = list(seq.children())
            for bn, relu6 in zip(layers, layers[1:]):
                if type(bn) is BatchNorm2D and type(relu6) is nn.ReLU6:
                    bn.__class__, relu6.__class__ = BatchNormReLU6, ClippedBefore
    return model
