"""Weight files (.pdparams, .pdopt): read as data, never as code; the EMA's keys.

A .pdparams or .pdopt is a pickle, and unpickling a file can call any function it names: a
file crafted with ``__reduce__`` runs its command inside ``paddle.load``, before the caller sees
what came back. So every weight file the tool reads goes through :func:`unpickle`:

1. its opcodes are scanned (``pickletools.genops``, nothing is built) and every global it
   would look up is named -- ``GLOBAL``/``INST`` directly, ``STACK_GLOBAL`` from the strings
   the scan tracks on the stack and in the memo; one it cannot name is refused too;
2. anything outside :data:`ALLOWED` -- what state dicts and optimizer states hold: numpy's
   array reconstructor, ndarray and dtype, numpy scalars, tuple, OrderedDict, and
   ``_codecs.encode`` for protocol-2 files -- is refused with one line naming the file and
   the global (exit code 2);
3. the file is then unpickled by an ``Unpickler`` whose ``find_class`` admits the same set
   only, so a global the scan missed still cannot be reached.

``builtins.eval`` is never admitted, although Paddle itself pickles a raw DenseTensor with it:
no weight file we write or read holds one. :func:`read_weights` then does what
``paddle.load`` does after unpickling (packs split parameters, turns arrays into tensors with
their structured names, with Paddle 3.3.1's own helpers), so its results are paddle.load's.

last.pdparams of a run with ``train.ema_decay`` holds the trained weights under their own
names, the average under ``ema.<name>`` and the update count under ``ema.@updates``
(app/train/ema.py); :func:`split_checkpoint` takes such a dict apart.
"""
from __future__ import annotations

import _compat_pickle
import io
import pickle
import pickletools
from pathlib import Path

import numpy as np
from paddle.framework.io import _ndarray_to_tensor, _pack_loaded_dict, _parse_load_result

from app.util.errors import UserError

EMA_PREFIX = "ema."
EMA_UPDATES = "ema.@updates"

ALLOWED = frozenset({
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("builtins", "tuple"), ("collections", "OrderedDict"), ("_codecs", "encode"),
})
_STRINGS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
            "SHORT_BINUNICODE", "BINUNICODE8"}
_UNNAMED = ("?", "?")  # a global the scan cannot name


class RefusedGlobal(UserError):
    """A weight file names a global outside :data:`ALLOWED`."""


def _python3_name(module: str, name: str) -> tuple:
    """Protocol-2 files may name Python 2's modules (``__builtin__``); as Unpickler maps them."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def pickle_globals(data: bytes) -> list:
    """Every global the pickle ``data`` would look up, as (module, name), in file order,
    found without building anything; ``("?", "?")`` for one the scan cannot name (a
    ``STACK_GLOBAL`` whose operands are not plain strings, an extension-registry code or
    a persistent id)."""
    mark = object()
    stack, memo, found = [], {}, []
    for op, arg, _ in pickletools.genops(data):
        name = op.name
        if name in ("GLOBAL", "INST"):
            found.append(_python3_name(*arg.split(" ", 1)))
        elif name == "STACK_GLOBAL":
            attr = stack.pop() if stack else None
            module = stack.pop() if stack else None
            ok = isinstance(module, str) and isinstance(attr, str)
            found.append(_python3_name(module, attr) if ok else _UNNAMED)
            stack.append(None)
            continue
        elif name in ("EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID"):
            found.append(_UNNAMED)
        if name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1] if stack else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(arg))
        else:
            before = op.stack_before
            if pickletools.markobject in before:  # everything down to the mark goes
                while stack and stack.pop() is not mark:
                    pass
                below = before.index(pickletools.markobject)  # and what lies under it
            else:
                below = len(before)
            if below:
                del stack[-below:]
            for item in op.stack_after:
                if item is pickletools.markobject:
                    stack.append(mark)
                else:
                    stack.append(arg if name in _STRINGS and isinstance(arg, str) else None)
    return found


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if _python3_name(module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def unpickle(path) -> object:
    """The object a weight file holds, as ``pickle.load(f, encoding="latin1")`` gives it,
    read only if every global it names is in :data:`ALLOWED` (:class:`RefusedGlobal`
    otherwise, before anything is built). Other failures raise what pickle raises."""
    path = Path(path)
    data = path.read_bytes()
    for module, name in pickle_globals(data):
        if (module, name) not in ALLOWED:
            what = "a global it hides" if (module, name) == _UNNAMED else f"{module}.{name}"
            raise RefusedGlobal(f"{path}: refused, not read: it would call {what} when "
                                f"unpickled, and a weights file holds arrays only (a file "
                                f"made to run code?)")
    return _Unpickler(io.BytesIO(data), encoding="latin1").load()


def read_weights(path):
    """``paddle.load(path)`` of a pickled state, made safe by :func:`unpickle`: the same
    result (tensors under their structured names) from a file that passed the check."""
    result = unpickle(path)
    if not isinstance(result, dict):
        return _parse_load_result(result, False)
    result = _pack_loaded_dict(result)
    names = result.get("StructuredToParameterName@@")
    if names is None:
        return _parse_load_result(result, False)
    for key, name in names.items():  # paddle.save's own state dicts
        if isinstance(result[key], np.ndarray):
            result[key] = _ndarray_to_tensor(result[key], False)
            if getattr(result[key], "name", ""):
                result[key].name = name
    del result["StructuredToParameterName@@"]
    return result


def load_state_dict(path, what_to_do: str) -> dict:
    """A .pdparams/.pdopt as a dict of tensors (see :func:`read_weights`); one line naming
    the file when it is damaged, or refused."""
    path = Path(path)
    try:
        state = read_weights(path)
    except RefusedGlobal:
        raise
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
