"""The hapi metrics a model is prepared with, beside paddle's Accuracy: the eval loss and the
eval confusion matrix, both over every eval image exactly once (under data parallel too)."""
import numpy as np
import paddle
import paddle.nn.functional as F


class MeanLoss(paddle.metric.Metric):
    """The eval loss: cross-entropy averaged over every eval sample, logged as ``mean_loss``.

    Cross-entropy alone: NAM's sparsity penalty is part of the training objective (hapi's
    train ``loss``), not of how well the model predicts, and leaving it out keeps eval losses
    comparable across attention modules.

    A metric rather than a callback on hapi's per-batch ``loss``: under data parallel hapi
    feeds metrics the outputs it has gathered from all ranks and trimmed of the sampler's
    padding, so the eval loss covers every eval image exactly once, like eval accuracy
    (hapi's ``loss`` log is each rank's own shard). While ``network`` trains it adds nothing
    (nan): the train loss is hapi's per-batch ``loss``.
    """

    def __init__(self, network: paddle.nn.Layer):
        super().__init__()
        self.network = network
        self.reset()

    def compute(self, logits, label):
        if self.network.training:
            return paddle.zeros([]), label[:0]
        return F.cross_entropy(logits.astype("float32"), label), label

    def update(self, loss, label):
        self.total += np.asarray(loss).item() * len(label)
        self.count += len(label)
        return self.accumulate()

    def reset(self):
        self.total, self.count = 0.0, 0

    def accumulate(self) -> float:
        return self.total / self.count if self.count else float("nan")

    def name(self) -> str:
        return "mean_loss"


class ConfusionCounts(paddle.metric.Metric):
    """The eval confusion matrix (true x predicted counts): ``matrix`` while an eval runs,
    ``last`` that of the last eval that finished.

    A metric for the same reason as :class:`MeanLoss`: hapi feeds it every eval image once,
    gathered from all ranks. ``accumulate`` returns the number of images counted. hapi resets
    its metrics at the end of every eval, before the callbacks' ``on_eval_end``: ``reset``
    keeps the finished count as ``last`` for them.
    """

    def __init__(self, network: paddle.nn.Layer, num_classes: int):
        super().__init__()
        self.network, self.num_classes = network, num_classes
        self.reset()

    def compute(self, logits, label):
        if self.network.training:
            return label[:0], label[:0]
        return logits.argmax(axis=-1), label

    def update(self, pred, label):
        pred, label = np.asarray(pred).reshape(-1), np.asarray(label).reshape(-1)
        if len(pred):  # nothing while training (whose labels may be soft targets)
            np.add.at(self.matrix, (label.astype(np.int64), pred.astype(np.int64)), 1)
        return self.accumulate()

    def reset(self):
        if getattr(self, "matrix", None) is not None and self.matrix.sum():
            self.last = self.matrix
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    last = None

    def accumulate(self) -> float:
        return float(self.matrix.sum())

    def name(self) -> str:
        return "confusion_images"


def topk_for(num_classes: int) -> tuple:
    return (1, min(5, num_classes))
