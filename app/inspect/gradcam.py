"""Grad-CAM at a network's last convolutional stage, and the same images across several runs.

Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra. "Grad-CAM: Visual Explanations from Deep
Networks via Gradient-based Localization", ICCV 2017. https://arxiv.org/abs/1610.02391

For a target class c and the activations A [K, h, w] of the chosen layer:

    alpha_k = mean_hw( d y_c / d A_k )          y_c: the class's logit (before softmax)
    cam     = relu( sum_k alpha_k A_k )          [h, w], shown normalised to [0, 1]

Where: the last convolutional stage whose map is at least 4x4 at the image size
(:func:`target_layer`): at 128 px TowerNet's last Inception is 1x1, which would colour the
whole image alike, so its first Inception (4x4) is used; ResNet-50's layer4 and
MobileNetV2's last conv are 4x4 there. The activations are captured with a forward hook and
their gradient kept through one backward pass (parameter gradients cleared after): the
models are not changed. For a network that ends in global average pooling and a Linear
layer (all four hosts here), Grad-CAM at the last conv stage is CAM (Zhou et al., CVPR 2016)
up to the factor 1/(h*w): alpha_k = W[k, c] / (h*w).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from app.data.picks import pick_images
from app.inspect import figures
from app.inspect.evaluate import eval_dataset, load_network
from app.inspect.predict import load_image_batch
from app.run.records import rewrite_records
from app.util.errors import UserError

MIN_SIDE = 4  # a map smaller than 4x4 says little about where the network looks


def _stages(network: nn.Layer) -> list[tuple[str, nn.Layer]]:
    """The host's convolutional stages, input to output."""
    kind = type(network).__name__
    if kind == "TowerNet":
        return [(n, getattr(network, n)) for n in ("b3", "b4", "inc1", "inc2", "inc3")]
    if kind == "ResNet":
        return [(f"layer{i}", getattr(network, f"layer{i}")) for i in range(1, 5)]
    if kind == "MobileNetV2":
        return [(f"features.{i}", m) for i, m in enumerate(network.features)]
    convs = [(name, m) for name, m in network.named_sublayers() if isinstance(m, nn.Conv2D)]
    if not convs:
        raise ValueError(f"{kind} has no Conv2D layer for Grad-CAM")
    return convs


def target_layer(network: nn.Layer, image_size: int | None = None) -> tuple[str, nn.Layer]:
    """(name, layer) where Grad-CAM looks: the last convolutional stage (TowerNet's last
    Inception, ResNet's layer4, MobileNetV2's last conv, VGG's last conv; any other network:
    its last Conv2D) -- or, given ``image_size``, the last stage whose map is still at least
    ``MIN_SIDE`` x ``MIN_SIDE`` there (TowerNet's inc3 is 1x1 at 128 px, inc1 4x4)."""
    stages = _stages(network)
    if image_size is None:
        return stages[-1]
    sides = {}
    hooks = [m.register_forward_post_hook(lambda layer, i, o, name=name: sides.update({name: min(o.shape[2:])}))
             for name, m in stages]
    was_training = network.training
    network.eval()
    try:
        with paddle.no_grad():
            network(paddle.zeros([1, 3, image_size, image_size]))
    finally:
        for h in hooks:
            h.remove()
        network.train(was_training)
    large = [(name, m) for name, m in stages if sides.get(name, 0) >= MIN_SIDE]
    return large[-1] if large else max(stages, key=lambda s: sides.get(s[0], 0))


def gradcam(network: nn.Layer, images: np.ndarray, targets=None, layer: nn.Layer | None = None):
    """``(cams [N, h, w], probs [N, classes])`` for preprocessed ``images`` [N, 3, S, S].

    ``targets``: one class index per image, or None for the predicted class. ``cams`` are
    the raw (unnormalised) Grad-CAM maps at ``layer`` (default: :func:`target_layer` for
    this image size).
    """
    layer = layer if layer is not None else target_layer(network, images.shape[-1])[1]
    captured = {}
    hook = layer.register_forward_post_hook(lambda _, inputs, output: captured.update(a=output))
    network.eval()
    try:
        logits = network(paddle.to_tensor(images))
    finally:
        hook.remove()
    acts = captured["a"]
    acts.retain_grads()
    probs = F.softmax(logits.astype("float32"), axis=-1).numpy()
    chosen = probs.argmax(1) if targets is None else np.asarray(targets, dtype=np.int64)
    score = (logits * F.one_hot(paddle.to_tensor(chosen), logits.shape[-1])).sum()
    # A full backward, not paddle.grad(score, acts): Paddle's partial grad refuses the oneDNN
    # backend's PyLayers (it wants None for the weights it was not asked about).
    score.backward()
    grads = acts.grad
    network.clear_gradients(set_to_zero=False)
    alpha = grads.mean(axis=[2, 3], keepdim=True)
    cams = F.relu((alpha * acts.detach()).sum(axis=1))
    return cams.numpy(), probs


def normalise(cam: np.ndarray) -> np.ndarray:
    hi = float(cam.max())
    return cam / hi if hi > 0 else np.zeros_like(cam)


def compare_gradcam(loaded: list, n: int, target: str, seed: int, out_dir, data=None):
    """gradcam.png in ``out_dir`` for ``loaded`` = [(run folder, weights, meta), ...].

    The images come from the first run's eval split (or ``data``), chosen by
    :func:`pick_images`; each run preprocesses them its own way (its mean/std). Runs must
    share classes and image size (a one-line error otherwise). The grid is also added to
    every run's VisualDL records (tag ``gradcam/<target>``).
    """
    first = loaded[0][2]
    for run, _, meta in loaded[1:]:
        for key in ("classes", "image_size"):
            if meta[key] != first[key]:
                raise UserError(f"--gradcam compares runs on the same images: {run} has another "
                                f"{key.replace('_', ' ')} than {loaded[0][0]}")
    classes, size = first["classes"], first["image_size"]
    ds = eval_dataset(first, data)
    picked = pick_images(ds.samples, classes, n, seed)
    paths = [p for p, _ in picked]
    labels = [label for _, label in picked]
    columns = []
    for run, weights, meta in loaded:
        network = load_network(weights, meta)
        layer_name, layer = target_layer(network, size)
        cams, probs = gradcam(network, load_image_batch(paths, meta),
                              labels if target == "true" else None, layer)
        preds = probs.argmax(1)
        columns.append({"name": f"{Path(run).name}\n@{layer_name}",
                        "cams": [normalise(c) for c in cams],
                        "titles": [f"{classes[p]} {probs[i, p]:.2f}" for i, p in enumerate(preds)]})
    path = Path(out_dir) / "gradcam.png"
    originals = [figures.thumbnail(p, size) for p in paths]
    grid = figures.plot_gradcam_grid(originals, [f"true: {classes[c]}" for c in labels], columns, path)
    for run, _, meta in loaded:  # into the run's one record file (VisualDL shows the newest)
        writer = rewrite_records(run, lambda tag, step: tag != f"gradcam/{target}")
        writer.add_image(f"gradcam/{target}", grid, int(meta.get("epoch") or 0))
        writer.close()
    return path
