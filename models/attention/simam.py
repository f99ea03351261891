"""SimAM: a parameter-free attention module.

Yang, Zhang, Li, Xie. "SimAM: A Simple, Parameter-Free Attention Module for Convolutional
Neural Networks", ICML 2021. https://proceedings.mlr.press/v139/yang21o.html
Reference code: https://github.com/ZjjConan/SimAM (networks/attentions/simam_module.py).

Each activation is weighted by the inverse of its minimal energy, a closed form of how much
it stands out from the other positions of its channel:

    d = (x - mean_hw(x))^2
    y = d / (4 * (sum_hw(d) / n + lambda)) + 0.5,   n = h*w - 1
    out = x * sigmoid(y)

On a 1x1 map the reference formula is 0/0 (d = 0 and n = 0) and poisons the whole network
with NaN. Here n = max(h*w - 1, 1): a single position has d = 0, so y = 0.5 and the module
scales every channel by sigmoid(0.5) ~ 0.62 -- finite, but carrying no information, which is
why ``min_hw = 2`` tells a host network (see TowerNet) to skip the module on such maps.
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from backend import fused


class SimAM(nn.Layer):
    """Parameter-free 3-D attention; ``channels`` is accepted for a uniform factory only."""

    # Smallest H*W on which the module's statistics mean something (one neighbour).
    min_hw = 2

    def __init__(self, channels: int | None = None, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.e_lambda = e_lambda

    # attend() hands it a channels-last map as it is (data_format="NHWC")
    takes_channels_last = True

    def forward(self, x: paddle.Tensor, data_format: str = "NCHW") -> paddle.Tensor:
        if data_format == "NHWC":  # a channels-last host: one C kernel each way where it is built
            y = fused.simam(x, self.e_lambda)
            return y if y is not None else self.forward(x.transpose([0, 3, 1, 2])).transpose([0, 2, 3, 1])
        _, c, h, w = x.shape  # the batch may be dynamic (-1) in an exported graph
        m = h * w
        n = max(m - 1, 1)
        # Cheap on purpose (it must stay under 3% of a CPU training step). Each channel is a
        # row of a [b*c, h*w] matrix; its two sums are GEMVs with a column of ones (MKL,
        # multi-threaded, and a backward that is one outer product) instead of Paddle's
        # single-threaded reduce and broadcast-expand; the denominator 4*(sum/n + lambda) is
        # one fused scale and the division a multiply by its reciprocal. The statistics and
        # the gate are float32 even for half-precision input (AMP on a GPU), float64 for float64.
        rows = x.reshape([-1, m])
        with paddle.amp.auto_cast(enable=False):
            half = rows.dtype in (paddle.float16, paddle.bfloat16)
            rows32 = rows.astype("float32") if half else rows
            ones = paddle.ones([m, 1], dtype=rows32.dtype)
            d = (rows32 - paddle.scale(paddle.matmul(rows32, ones), scale=1.0 / m)).square()
            inv_denom = paddle.reciprocal(
                paddle.scale(paddle.matmul(d, ones), scale=4.0 / n, bias=4.0 * self.e_lambda))
            gate = F.sigmoid(paddle.scale(d * inv_denom, bias=0.5))
        if gate.dtype != rows.dtype:
            gate = gate.astype(rows.dtype)
        return (rows * gate).reshape([-1, c, h, w])

    def extra_repr(self) -> str:
        return f"e_lambda={self.e_lambda}"
