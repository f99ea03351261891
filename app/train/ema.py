"""An exponential moving average of the weights (``train.ema_decay``), used for evaluation.

After every training step ``ema = d * ema + (1 - d) * w`` over the network's whole state
dict (BatchNorm statistics included, as timm's ``ModelEmaV2`` and PaddleClas's ``EMA`` do),
with the usual warm-up of the decay, ``d = min(decay, (1 + n) / (10 + n))`` after n updates,
so early averages are not dominated by the random initial weights.

Evaluation runs on the averaged weights: the callback swaps them in at every eval's start and
the trained weights back at its end, after ``SaveBest`` -- so best.pdparams, the logged eval
metrics, the VisualDL pictures, predictions.csv and export all use the EMA weights.
last.pdparams keeps both (the trained weights under their own names, the average under
``ema.<name>``, the update count under ``ema.@updates``), so a resumed run continues both
exactly.
"""
from __future__ import annotations

import paddle
from paddle.callbacks import Callback

from app.build.weights import EMA_PREFIX, EMA_UPDATES


class ModelEMA(Callback):
    """Keeps the average; swaps it in for every evaluation (must come after ``SaveBest``)."""

    def __init__(self, network, decay: float, shadow: dict | None = None, updates: int = 0):
        super().__init__()
        self.network, self.decay, self.updates = network, decay, updates
        state = network.state_dict()
        self.shadow = {k: (paddle.to_tensor(shadow[k]) if shadow and k in shadow else v).detach().clone()
                       for k, v in state.items()}
        self.live = None

    @paddle.no_grad()
    def on_train_batch_end(self, step, logs=None):
        self.updates += 1
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for k, v in self.network.state_dict().items():
            s = self.shadow[k]
            if paddle.is_floating_point(v):
                s.set_value(s * d + v.detach() * (1.0 - d))
            else:
                s.set_value(v.detach())

    def _load(self, values: dict) -> None:
        for k, v in self.network.state_dict().items():
            v.set_value(values[k])

    def on_eval_begin(self, logs=None):
        self.live = {k: v.detach().clone() for k, v in self.network.state_dict().items()}
        self._load(self.shadow)

    def on_eval_end(self, logs=None):
        if self.live is not None:
            self._load(self.live)
            self.live = None

    def use_average(self) -> None:
        """Leave the averaged weights in the network (training is over)."""
        self._load(self.shadow)

    def checkpoint_params(self) -> dict:
        """What last.pdparams holds: the trained weights, the average and the update count."""
        trained = self.live if self.live is not None else self.network.state_dict()
        return {**trained, **{EMA_PREFIX + k: v for k, v in self.shadow.items()},
                EMA_UPDATES: paddle.to_tensor([self.updates], dtype="int64")}
