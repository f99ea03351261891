"""Means over a feature map's positions or channels as matrix products (same maths, faster on CPU).

Paddle 3.3.1's CPU ``mean`` backward is single-threaded and ~15x slower than ``sum``'s, and
broadcasting a [N, C, 1, 1] gradient back over H x W is slow too: in an SE module on
MobileNetV2's [32, 96, 32, 32] maps, ``x.mean(axis=[2, 3])`` was ~85% of the module's forward +
backward. A product with a column (or row) of ones is the same sum through MKL's
multi-threaded GEMV, and its backward is one outer product. SimAM uses the same trick
(simam.py). Results differ from ``mean`` only in the order of the additions.
"""
from __future__ import annotations

import paddle


def spatial_mean(x: paddle.Tensor) -> paddle.Tensor:
    """Mean over H and W of [N, C, H, W] -> [N, C]."""
    _, c, h, w = x.shape  # the batch may be dynamic (-1) in an exported graph: reshape with -1
    ones = paddle.ones([h * w, 1], x.dtype)
    return paddle.scale(paddle.matmul(x.reshape([-1, h * w]), ones), 1.0 / (h * w)).reshape([-1, c])


def channel_mean(x: paddle.Tensor) -> paddle.Tensor:
    """Mean over C of [N, C, H, W] -> [N, 1, H, W]."""
    _, c, h, w = x.shape
    ones = paddle.ones([1, c], x.dtype)
    return paddle.scale(paddle.matmul(ones, x.reshape([-1, c, h * w])), 1.0 / c).reshape([-1, 1, h, w])
