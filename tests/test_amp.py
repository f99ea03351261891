"""Mixed precision (train.amp): fp16 refused on a CPU; the GPU path's hapi settings, checked on a CPU
(CPU bf16: tests/test_bf16.py)."""
import numpy as np
import paddle
import pytest

from app.build.model import amp_configs_for
from app.build.network import build_network
from app.config.load import load_config
from app.train.trainer import build_model
from app.util.errors import UserError
from conftest import FAST_TRAIN, run_cli


def test_amp_on_cpu_is_a_one_line_error(tiny_split, tmp_path):
    proc = run_cli("train.py", "--model", "towernet", "--data", tiny_split, "--epochs", "1",
                   "--output", tmp_path, "--device", "cpu", *FAST_TRAIN, "-o", "train.amp=fp16")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("error: train.amp=fp16 needs a GPU; on CPU use "
                                   "train.amp=off or bf16")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("amp, dtype", [("fp16", "float16"), ("bf16", "bfloat16")])
def test_gpu_amp_reaches_hapi_as_o1(monkeypatch, amp, dtype):
    """What prepare_model hands hapi on a GPU: hapi 3.3.1 validates amp_configs in prepare
    (it rejects unknown keys such as "dtype") and runs its AMP branch in train_batch; on a
    CPU, autocast and the loss scaler warn and do nothing, but the same code runs."""
    monkeypatch.setattr(paddle, "get_device", lambda: "gpu:0")
    monkeypatch.setattr(paddle.amp, "is_bfloat16_supported", lambda *a: True)
    cfg = load_config(model="towernet", overrides=[("train.amp", amp), ("data.image_size", 32)])
    network = build_network("towernet", 4)
    model = build_model(cfg, network, 4, 1, amp_configs_for(amp))
    adapter = model._adapter
    assert adapter._amp_level == "O1"
    assert adapter._amp_custom_lists.get("dtype", "float16") == dtype
    if amp == "bf16":
        assert adapter._amp_configs == {"init_loss_scaling": 1.0,
                                        "use_dynamic_loss_scaling": False}
    images = np.random.RandomState(0).rand(4, 3, 32, 32).astype("float32")
    labels = np.arange(4, dtype="int64").reshape(4, 1)
    with pytest.warns(UserWarning):  # "... can only be enabled on CUDAPlace ..."
        losses, _ = model.train_batch([images], [labels])
    assert np.isfinite(losses[0]).all()


def test_bf16_on_a_gpu_without_bfloat16_is_refused(monkeypatch):
    monkeypatch.setattr(paddle, "get_device", lambda: "gpu:0")
    monkeypatch.setattr(paddle.amp, "is_bfloat16_supported", lambda *a: False)
    with pytest.raises(UserError, match="train.amp=fp16"):
        amp_configs_for("bf16")
    assert amp_configs_for("fp16") == {"level": "O1"}
    assert amp_configs_for("off") is None
