"""Where and how a process computes: device, CPU threads, ranks of a data-parallel job, seeds."""
import os
import random

import numpy as np
import paddle

from app.util.errors import UserError


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def select_device(name: str = "auto", threads: int = 0) -> str:
    """Put Paddle on ``gpu`` (when CUDA is built in and a GPU is visible) or ``cpu``.

    On CPU the math kernels use ``threads`` threads (0: every core this process may use);
    Paddle's own default (OMP_NUM_THREADS=1 at import) is one thread.
    """
    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if name == "gpu" and not has_gpu:
        raise UserError("--device gpu: this Paddle build has no CUDA or no GPU is visible "
                        "(install paddlepaddle-gpu from requirements-gpu.txt)")
    device = "gpu" if name == "gpu" or (name == "auto" and has_gpu) else "cpu"
    if device == "gpu":
        local = int(os.environ.get("FLAGS_selected_gpus", "0").split(",")[0])
        paddle.set_device(f"gpu:{local}")
    else:
        paddle.set_device("cpu")
        n = threads or max(1, available_cores() // max(1, world_size()))
        paddle.base.core.set_num_threads(n)
    return device


def world_size() -> int:
    return paddle.distributed.get_world_size()


def is_main_process() -> bool:
    return paddle.distributed.get_rank() == 0


def broadcast_from_main(obj):
    """``obj`` as rank 0 has it, on every rank (a no-op in a single process).

    Needs the parallel environment, which hapi's ``paddle.Model`` initialises when it is
    built under ``paddle.distributed.launch``.
    """
    if world_size() < 2:
        return obj
    objects = [obj]
    paddle.distributed.broadcast_object_list(objects, src=0)
    return objects[0]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The random seed of (run seed, 0-based epoch): the loader's shuffle and the per-epoch
    reseeding of augmentation (callbacks.EpochSeed) start from it."""
    return (seed * 100_003 + epoch) % 2**32
