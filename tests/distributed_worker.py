"""train.py, plus a report from each rank; run by tests/test_distributed.py, not a test itself.

    python -m paddle.distributed.launch --nproc_per_node 2 tests/distributed_worker.py \
        DUMP [train.py arguments ...]

Runs ``train.main`` with the given arguments, as ``train.py`` would, then each rank writes
what only it can tell: ``DUMP/rank<r>.pdparams`` (its network's state_dict after training)
and ``DUMP/rank<r>.json`` (train.py's exit code, the run folder its trainer returned, the
train-image indices it read, in order, and each training step's loss and batch size).
``NAN_ON_RANK=r`` in the environment makes rank r's second training loss NaN.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import app  # noqa: F401  (quietens paddle; must come first)

# isort: split
import paddle

import train
from app.data.dataset import ImageFolderDataset
from app.train import trainer


def main(dump: str, *train_args: str) -> int:
    import os

    from app.build.loss import ClassificationLoss

    models, run_dirs, train_reads, losses = [], [], [], []
    loss_forward = ClassificationLoss.forward
    nan_rank = int(os.environ.get("NAN_ON_RANK", "-1"))

    def record_loss(self, logits, label):
        loss = loss_forward(self, logits, label)
        if not isinstance(loss, (list, tuple)) and models and models[0].network.training:
            if nan_rank == paddle.distributed.get_rank() and len(losses) == 1:
                loss = loss * float("nan")  # this rank's second step goes wrong
            losses.append([float(loss.numpy()), int(label.shape[0])])
        return loss

    ClassificationLoss.forward = record_loss
    prepare_model, run_training = trainer.prepare_model, trainer.train
    read_item = ImageFolderDataset.__getitem__

    def capture_model(*args, **kwargs):
        models.append(prepare_model(*args, **kwargs))
        return models[-1]

    def capture_run_dir(*args, **kwargs):
        run_dirs.append(str(run_training(*args, **kwargs)))
        return run_dirs[-1]

    def record(self, index):
        if self.split == "train":
            train_reads.append(int(index))
        return read_item(self, index)

    trainer.prepare_model, trainer.train = capture_model, capture_run_dir
    ImageFolderDataset.__getitem__ = record
    code = train.main(list(train_args))

    rank = paddle.distributed.get_rank()
    if models:
        paddle.save(models[0].network.state_dict(), str(Path(dump) / f"rank{rank}.pdparams"))
    (Path(dump) / f"rank{rank}.json").write_text(json.dumps(
        {"exit_code": code, "run_dirs": run_dirs, "train_reads": train_reads, "losses": losses}))
    return code


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
