"""Speed levers change how TowerNet is computed, never what.

The lever in use: ``app`` sets MKL_DEBUG_CPU_TYPE=5 on AMD CPUs, so MKL runs its AVX2 GEMM
kernels instead of its generic path. GEMMs are all it changes, and MKL reads the variable
once, so each side runs in its own process.

Whole-network gradients are no fit for a 1e-5 check: a last-bit difference can flip a
max-pool or ReLU decision and move a gradient by %, in either direction (seen on one of two
seeds, where the float32 result *without* the lever happened to be the closer one to float64).
So: every conv of towernet_simam, forward and both gradients, against float64 within 1e-5;
the network's logits and loss with and without the lever within 1e-4.
"""
import os
import subprocess
import sys

import numpy as np

from tests.conftest import ROOT

PROBE = r"""
import sys
import app, numpy as np, paddle
import paddle.nn.functional as F
from models import create_model
paddle.set_device("cpu")
paddle.seed(0)
net = create_model("towernet_simam", num_classes=16)
rng = np.random.default_rng(0)
x = paddle.to_tensor(rng.standard_normal((4, 3, 64, 64), dtype=np.float32))
y = paddle.to_tensor(rng.integers(0, 16, (4, 1)).astype(np.int64))
logits = net(x)
out = {"logits": logits.numpy(), "loss": F.cross_entropy(logits, y).numpy()}
worst = 0.0
for conv in [m for m in net.sublayers() if isinstance(m, paddle.nn.Conv2D)]:
    w = conv.weight.numpy()
    inp = rng.standard_normal((4, w.shape[1], 8, 8))
    results = []
    for dtype in ("float32", "float64"):
        xi = paddle.to_tensor(inp.astype(dtype), stop_gradient=False)
        wi = paddle.to_tensor(w.astype(dtype), stop_gradient=False)
        yi = F.conv2d(xi, wi, stride=conv._stride, padding=conv._padding)
        (yi * yi).sum().backward()
        results.append([yi.numpy(), xi.grad.numpy(), wi.grad.numpy()])
    for a, b in zip(*results):
        worst = max(worst, float(np.abs(a - b).max() / np.abs(b).max()))
out["conv_worst"] = np.array(worst)
np.savez(sys.argv[1], **out)
"""


def run_probe(path, mkl_cpu_type: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MKL_DEBUG_CPU_TYPE": mkl_cpu_type}
    subprocess.run([sys.executable, "-c", PROBE, str(path)], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=300)
    return dict(np.load(path))


def test_mkl_cpu_type_keeps_what_is_computed(tmp_path):
    # "" leaves MKL on its own dispatch (what Paddle does without app), "5" is the lever.
    base = run_probe(tmp_path / "base.npz", "")
    fast = run_probe(tmp_path / "fast.npz", "5")
    assert float(base["conv_worst"]) < 1e-5 and float(fast["conv_worst"]) < 1e-5
    np.testing.assert_allclose(fast["logits"], base["logits"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(fast["loss"], base["loss"], rtol=1e-5)


def test_app_sets_mkl_cpu_type_only_on_amd():
    probe = "import os, app; print(os.environ.get('MKL_DEBUG_CPU_TYPE', ''))"
    env = {k: v for k, v in os.environ.items() if k != "MKL_DEBUG_CPU_TYPE"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout.strip()
    from app import _cpu_vendor

    assert out == ("5" if _cpu_vendor() == "AuthenticAMD" else "")
