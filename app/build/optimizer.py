"""The optimizer and its learning-rate schedule, from the config's ``optimizer`` section."""
import paddle

from app.build.device import world_size
from app.build.sharpness import SAMMomentum
from app.util.errors import UserError


def build_optimizer(section: dict, network: paddle.nn.Layer, steps_per_epoch: int, epochs: int,
                    warmup_epochs: int = 0):
    """The config's ``optimizer`` ``section`` for ``network``, over ``epochs`` of
    ``steps_per_epoch``: Momentum (Nesterov with ``nesterov``; sharpness-aware with
    ``sam_rho``, app/build/sharpness.py) + L2Decay (not on 1-D parameters with
    ``no_decay_norm_bias``) with a cosine-annealing lr stepped once per batch, after a linear
    warm-up over the first ``warmup_epochs``.

    Parameters whose ``optimize_attr["learning_rate"]`` was scaled (``backbone_lr_mult``)
    step at that fraction of the schedule: Paddle's per-parameter learning rate.
    """
    total = epochs * steps_per_epoch
    warmup = min(warmup_epochs * steps_per_epoch, total - 1)
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(learning_rate=section["lr"],
                                                        T_max=total - warmup)
    if warmup > 0:  # linear from 0 to lr over the first epochs; the cosine still ends at the last step
        schedule = paddle.optimizer.lr.LinearWarmup(schedule, warmup_steps=warmup,
                                                    start_lr=0.0, end_lr=section["lr"])
    params = network.parameters()
    if section["no_decay_norm_bias"]:  # timm's filter_bias_and_bn, PaddleClas' no_weight_decay_name
        # 1-D parameters (norm scales and shifts, biases) decay at 0; Paddle lets a parameter's
        # own regularizer override the optimizer's weight_decay
        for p in params:
            if len(p.shape) <= 1:
                p.regularizer = paddle.regularizer.L2Decay(0.0)
    kwargs = dict(learning_rate=schedule, momentum=section["momentum"], use_nesterov=bool(section["nesterov"]),
                  parameters=params, weight_decay=paddle.regularizer.L2Decay(section["weight_decay"]))
    if section["sam_rho"]:
        if world_size() > 1:
            raise UserError("optimizer.sam_rho is not supported with data-parallel training "
                            "(its second pass would skip the gradient all-reduce); use one process")
        optimizer = SAMMomentum(section["sam_rho"], **kwargs)
    else:
        optimizer = paddle.optimizer.Momentum(**kwargs)
    # Every velocity now (zeros), not at its parameter's first gradient: a parameter frozen
    # by train.freeze_epochs (or skipped by its host) has none yet when last.pdopt is written,
    # and Paddle refuses to add an accumulator after loading a state that lacks it.
    block = paddle.static.default_main_program().global_block()
    optimizer._create_accumulators(block, [p for p in network.parameters() if not p.stop_gradient])
    return optimizer
