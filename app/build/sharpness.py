"""Sharpness-aware minimisation (Foret et al., ICLR 2021), ``optimizer.sam_rho``.

A SAM step takes the gradient ``g`` at the weights ``w``, moves to the nearby worst case
``w + rho * g / ||g||``, takes the gradient there on the same batch, returns to ``w`` and lets
Momentum step with that second gradient. It costs a second forward and backward per step.

Paddle ships no SAM and its optimizers take no closure (PyTorch's ``step(closure)``), so the
second pass is handed over by the hapi Model: :class:`SAMModel` gives the batch to
:class:`SAMMomentum`, whose ``minimize`` hapi calls after its own forward and backward. hapi's
pass, at ``w``, is the one the step logs (loss, train accuracy) and whose BatchNorm
statistics are kept; the second pass's running statistics are put back, as in the reference
implementations (davda54/sam's ``disable_running_stats``). ``g`` leaves out the weight decay,
which the optimizer adds at ``w`` as in a plain step.
"""
import paddle
from paddle.hapi.model import to_list


def _tensor(x):
    return x if isinstance(x, paddle.Tensor) else paddle.to_tensor(x)


class SAMMomentum(paddle.optimizer.Momentum):
    """Momentum whose ``minimize`` takes the SAM step when :class:`SAMModel` has set
    ``closure`` (the second pass: loss at the current weights, backward done); a plain
    Momentum step otherwise. Its state (velocities, lr) is Momentum's, so checkpoints and
    resume are unchanged."""

    def __init__(self, rho: float, **kwargs):
        super().__init__(**kwargs)
        self.rho, self.closure = float(rho), None

    def minimize(self, loss, startup_program=None, parameters=None, no_grad_set=None):
        if self.closure is None:
            return super().minimize(loss, startup_program, parameters, no_grad_set)
        params = [p for p in self._parameter_list if not p.stop_gradient and p.grad is not None]
        with paddle.no_grad():
            g = paddle.concat([p.grad.astype("float32").flatten() for p in params])
            scale = self.rho / (paddle.sqrt((g * g).sum()) + 1e-12)  # one reduction: 6x faster than one per tensor
            saved = [p.clone() for p in params]  # put back exactly (w + e - e is not w in float32)
            for p in params:
                p.set_value(p + p.grad * scale.astype(p.dtype))
        self.clear_grad()
        loss = self.closure()
        with paddle.no_grad():
            for p, w in zip(params, saved):
                p.set_value(w)
        return super().minimize(loss, startup_program, parameters, no_grad_set)


class SAMModel(paddle.Model):
    """``paddle.Model`` whose training step hands its batch to a :class:`SAMMomentum`."""

    def train_batch(self, inputs, labels=None, update=True):
        sam = isinstance(self._optimizer, SAMMomentum) and update
        if sam:
            self._optimizer.closure = lambda: self._second_pass(inputs, labels)
        try:
            return super().train_batch(inputs, labels, update)
        finally:
            if sam:
                self._optimizer.closure = None

    def _second_pass(self, inputs, labels):
        net = self.network
        # BatchNorm's running statistics are stop-gradient parameters, not buffers
        kept = [(t, t.clone()) for t in net.state_dict().values() if t.stop_gradient]
        outputs = net(*[_tensor(x) for x in to_list(inputs)])
        labels = [_tensor(x) for x in to_list(labels or [])]
        loss = paddle.add_n(to_list(self._loss(*(to_list(outputs) + labels))))
        loss.backward()
        with paddle.no_grad():
            for t, value in kept:
                t.set_value(value)
        return loss
