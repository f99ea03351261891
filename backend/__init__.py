"""Execution backends: where a model's layers run, not what they compute.

``backend.onednn`` runs ``nn.Conv2D`` and ``nn.MaxPool2D`` forward and backward on the oneDNN
library inside the Paddle wheel (dygraph, CPU, float32), through ``backend._dnnl``, a ``ctypes``
binding of oneDNN's C API. ``models.create_model`` switches every model's layers to it in
place with :func:`backend.onednn.convert`; the layers keep their parameters and state-dict
keys, so a reader of ``models/`` sees the architectures only, and checkpoints do not depend
on the backend. ``TOWERNET_ONEDNN=0`` (or no usable libdnnl, a GPU, a static graph) falls
back to Paddle's own kernels. ``backend.fused`` adds the one fusion oneDNN lacks here,
BatchNorm + ReLU6 (a small C kernel built at first use; ``TOWERNET_FUSED=0`` or no compiler:
oneDNN's BN, then Paddle's ReLU6). Tests: tests/test_onednn.py, tests/test_fused.py,
tests/test_speed_equivalence.py.
"""
