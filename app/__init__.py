"""The training application, below the thin entry scripts (train.py, eval.py, bench/, data_tools/).

Floors, each importing only from the floors above it in this list (tests/test_layers.py):

    util      errors (one line, exit 2), atomic writes, the process set-up (runtime)
    config    YAML (default.yaml <- family/model YAML <- recipe <- -o) -> a checked two-level dict
    data      images, split folders, transforms, the dataset, augmentation, K-fold folders
    build     device and seeds, network, optimizer, loss and metrics, hapi Model, loaders,
              weight files, pretrained weights
    run       RunFolder, the one owner of a run folder's files; checkpoints, lock, VisualDL records
    inspect   prediction, evaluation, figures, Grad-CAM, attention maps, export
    train     the trainer (named steps), its callbacks, VisualDL logging, EMA
    study     runs of a study, significance, summary, the report, the runner

``models`` (architectures) and ``backend`` (oneDNN kernels) sit beside ``app``; ``app``
never imports ``data_tools`` (the CLIs import ``app``).

Importing ``app`` sets up the process before Paddle loads (:mod:`app.util.runtime`): quiet
logs, MKL's AVX2 kernels on AMD CPUs, and glibc keeping freed memory. Every entry point
imports ``app`` before anything imports Paddle.
"""
from app.util import runtime

runtime.configure()
