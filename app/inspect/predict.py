"""A network's predictions over a loader or a batch, and images read as a model's input."""
import numpy as np
import paddle
from PIL import Image

from app.data.images import read_rgb
from app.data.transforms import build_transform
from app.util.errors import UserError


@paddle.no_grad()
def _predict(network, loader, per_batch) -> tuple:
    network.eval()
    out, labels = [], []
    for images, label in loader:
        out.append(per_batch(images))
        labels.append(np.asarray(label).reshape(-1))
    return np.concatenate(out), np.concatenate(labels).astype("int64")


def predict_logits(network, loader) -> tuple:
    """Run ``network`` in eval mode over ``loader``; return (logits [N, C], labels [N])."""
    return _predict(network, loader, lambda images: network(images).astype("float32").numpy())


def predict_probs(network, loader, flip: bool = False) -> tuple:
    """(softmax probabilities [N, C], labels [N]) of ``network`` in eval mode over ``loader``;
    ``flip``: see :func:`view_probs` (each batch is read once for both views)."""
    return _predict(network, loader, lambda images: view_probs(network, images, flip))


def view_probs(network, images: paddle.Tensor, flip: bool = False) -> np.ndarray:
    """Softmax of ``network(images)`` (NCHW); ``flip``: averaged with that of the left-right
    mirror images (test-time augmentation)."""
    probs = softmax(network(images).astype("float32").numpy())
    if flip:
        probs = (probs + softmax(network(images.flip([3])).astype("float32").numpy())) / 2
    return probs


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def load_image_batch(paths, meta: dict) -> np.ndarray:
    """Image files -> the eval-time preprocessed batch float32 [N, 3, S, S] that ``meta``
    (best.json, or an export's export.json) describes."""
    transform = build_transform(meta["image_size"], meta["mean"], meta["std"], train=False)
    batch = []
    for path in paths:
        try:
            batch.append(transform(read_rgb(path)))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise UserError(f"cannot read image {path}: {e}") from e
    return np.stack(batch)


def top_predictions(paths, probs: np.ndarray, classes, topk: int) -> list:
    """[(path, [(class, probability), ...]), ...]: the ``topk`` best classes of each row."""
    k = min(topk, probs.shape[1])
    return [(str(p), [(classes[j], float(row[j])) for j in np.argsort(-row)[:k]])
            for p, row in zip(paths, probs)]
