"""Weight files (.pdparams, .pdopt): read with one clear line when damaged, and the EMA's keys.

last.pdparams of a run with ``train.ema_decay`` holds the trained weights under their own
names, the average under ``ema.<name>`` and the update count under ``ema.@updates``
(app/train/ema.py); :func:`split_checkpoint` takes such a dict apart.
"""
from __future__ import annotations

from pathlib import Path

import paddle

from app.util.errors import UserError

EMA_PREFIX = "ema."
EMA_UPDATES = "ema.@updates"


def load_state_dict(path, what_to_do: str) -> dict:
    """``paddle.load`` of a .pdparams/.pdopt; UserError naming the file when it is damaged."""
    path = Path(path)
    try:
        state = paddle.load(str(path))
    except Exception as e:  # truncated pickle, empty file, not a Paddle file
        reason = "empty" if path.is_file() and path.stat().st_size == 0 else type(e).__name__
        raise UserError(f"{path} is damaged ({reason}); {what_to_do}") from None
    if not isinstance(state, dict):
        raise UserError(f"{path} is damaged (not a state dict); {what_to_do}")
    return state


def split_checkpoint(params: dict) -> tuple[dict, dict | None, int]:
    """(trained weights, EMA weights or None, update count) of a last.pdparams dict."""
    own = {k: v for k, v in params.items() if not k.startswith(EMA_PREFIX)}
    ema = {k[len(EMA_PREFIX):]: v for k, v in params.items()
           if k.startswith(EMA_PREFIX) and k != EMA_UPDATES}
    updates = int(params[EMA_UPDATES].numpy().reshape(-1)[0]) if EMA_UPDATES in params else 0
    return own, (ema or None), updates
