"""The training loss."""
import paddle
import paddle.nn.functional as F

from models.attention import has_nam, nam_sparsity_penalty


class ClassificationLoss(paddle.nn.Layer):
    """Cross-entropy (label-smoothed by ``label_smoothing`` while training), plus NAM's L1
    sparsity penalty when the network contains NAM."""

    def __init__(self, network: paddle.nn.Layer, nam_penalty: float = 1e-4,
                 label_smoothing: float = 0.0):
        super().__init__()
        self.network_ref, self.label_smoothing = [network], label_smoothing
        # A plain list, so the network's parameters are not registered a second time here.
        self._network = [network] if has_nam(network) and nam_penalty > 0 else []
        self.nam_penalty = nam_penalty

    def forward(self, logits, label):
        eps = self.label_smoothing if self.network_ref[0].training else 0.0
        soft = label.dtype != paddle.int64  # soft targets [N, K] from mixup / CutMix
        if soft or eps:  # cross-entropy against (1 - eps) * target + eps / K; Paddle 3.3.1's
            # own label_smoothing has no CPU kernel for integer labels
            k = logits.shape[-1]
            target = label.astype("float32") if soft else F.one_hot(label.reshape([-1]), k)
            target = target * (1.0 - eps) + eps / k
            loss = -(target * F.log_softmax(logits.astype("float32"), axis=-1)).sum(-1).mean()
        else:
            loss = F.cross_entropy(logits, label)
        if self._network:
            loss = loss + nam_sparsity_penalty(self._network[0], self.nam_penalty)
        return loss
