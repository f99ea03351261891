"""What each attention layer looks at, captured with forward hooks (the models are untouched).

Every attention module computes ``out = x * gate``. A forward hook sees ``x`` and ``out``,
so the gate is recovered where ``x != 0``: ``gate = out / x``. From it:

- spatial modules (SimAM, Coordinate Attention, NAM) give a map: the gate averaged over
  the channels that are non-zero at each position (SimAM's 3-D weights averaged over C);
- CBAM's spatial map is its SpatialGate's own output (hooked directly, exact);
- channel modules (SE, ECA, Darknet SE) give one weight per channel, the least-squares
  ``sum(out * x) / sum(x * x)`` over the channel's positions (exact: the gate is constant).

The non-local block is not a gate (``out = x + y``): its map is the mean attention each
position receives, ``NonLocal.attention(x)`` (softmax weights [queries, keys]) averaged over
the queries and laid out on the key grid (half the size with ``sub_sample``). SAM's 3-D gate
is shown like SimAM's, averaged over channels.
"""
import numpy as np
import paddle

from app.inspect import figures
from models.attention import CBAM, ECA, NAM, SAM, SE, CoordAttention, DarknetSE, NonLocal, SimAM
from models.attention.cbam import SpatialGate

SPATIAL = (SimAM, CoordAttention, NAM, SAM)
CHANNEL = (SE, ECA, DarknetSE)


def _spatial_from_ratio(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    nonzero = np.abs(x) > 1e-8
    ratio = np.where(nonzero, out / np.where(nonzero, x, 1.0), 0.0)
    count = nonzero.sum(axis=1)
    return np.where(count > 0, ratio.sum(axis=1) / np.maximum(count, 1), np.nan)  # [N,H,W]


def _channel_from_ratio(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    num = (out * x).sum(axis=(2, 3))
    den = (x * x).sum(axis=(2, 3))
    return np.where(den > 0, num / np.maximum(den, 1e-30), np.nan)  # [N,C]


def _received_attention(layer: NonLocal, x) -> np.ndarray:
    """Mean softmax weight each key position receives over all queries, [N, H', W']."""
    weights = layer.attention(x).numpy().mean(axis=1)  # [N, m]
    h, w = x.shape[2], x.shape[3]
    if layer.sub_sample:
        h, w = -(-h // 2), -(-w // 2)
    return weights.reshape(-1, h, w)


def attention_layers(network) -> list:
    """(name, layer, kind) for every attention module; kind is "spatial" or "channel"."""
    found = []
    for name, layer in network.named_sublayers():
        if isinstance(layer, CBAM):
            gate = next(sub for sub in layer.sublayers() if isinstance(sub, SpatialGate))
            found.append((name, gate, "cbam"))
        elif isinstance(layer, NonLocal):
            found.append((name, layer, "nonlocal"))
        elif isinstance(layer, SPATIAL):
            found.append((name, layer, "spatial"))
        elif isinstance(layer, CHANNEL):
            found.append((name, layer, "channel"))
    return found


def capture(network, images: np.ndarray) -> list:
    """Run ``images`` [N,3,H,W] through ``network``; return one dict per attention layer
    that ran: {"name", "kind": "spatial"|"channel", "values": [N,H',W'] or [N,C]}."""
    return _capture(network, images)[0]


@paddle.no_grad()
def _capture(network, images: np.ndarray) -> tuple:
    """(:func:`capture`'s maps, the network's logits) from one forward pass."""
    records, handles = {}, []
    layers = attention_layers(network)

    def make_hook(name, kind):
        def hook(layer, inputs, output):
            x, out = inputs[0].numpy(), output.numpy()
            if kind == "cbam":
                records[name] = ("spatial", out[:, 0])
            elif kind == "nonlocal":
                records[name] = ("spatial", _received_attention(layer, inputs[0]))
            elif kind == "spatial":
                records[name] = ("spatial", _spatial_from_ratio(x, out))
            else:
                records[name] = ("channel", _channel_from_ratio(x, out))
        return hook

    for name, layer, kind in layers:
        handles.append(layer.register_forward_post_hook(make_hook(name, kind)))
    try:
        network.eval()
        logits = network(paddle.to_tensor(images)).numpy()
    finally:
        for h in handles:
            h.remove()
    return [{"name": name, "kind": records[name][0], "values": records[name][1]}
            for name, _, _ in layers if name in records], logits


def save_attention_grid(network, dataset, indices, classes, path) -> list:
    """A PNG: one row per eval image (original + one panel per attention layer); returns the maps."""
    return attention_grid(network, dataset, indices, classes, path)[0]


def attention_grid(network, dataset, indices, classes, path=None, max_layers=None) -> tuple:
    """(maps, uint8 RGB grid or None without attention layers); the PNG also to ``path``.

    ``max_layers`` shows that many layers, evenly spread from the first to the last
    (MobileNetV2 hosts have 17)."""
    if path is None and not attention_layers(network):
        return [], None
    images = np.stack([dataset[i][0] for i in indices])
    labels = [classes[int(dataset[i][1][0])] for i in indices]
    maps, logits = _capture(network, images)
    preds = logits.argmax(1)
    if max_layers and len(maps) > max_layers:
        maps = [maps[round(i * (len(maps) - 1) / (max_layers - 1))] for i in range(max_layers)]
    originals = [figures.thumbnail(dataset.samples[i][0], images.shape[-1]) for i in indices]
    titles = [f"{t} -> {classes[p]}" for t, p in zip(labels, preds)]
    if not maps and path is None:
        return maps, None
    return maps, figures.plot_attention_grid(originals, titles, maps, path)
