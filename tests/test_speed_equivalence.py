"""Speed levers change how TowerNet is computed, never what.

Levers in use: max-pools run on oneDNN, or where it is off take Paddle's argmax path while
training (same values and gradient, ties included, checked exactly below; the convs on oneDNN
are checked in tests/test_onednn.py); ``app`` keeps freed memory in the heap (allocation only, no
arithmetic; checked that it takes effect); and ``app`` sets MKL_DEBUG_CPU_TYPE=5 on AMD CPUs, so MKL runs its AVX2 GEMM
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
import pytest

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
    from app.util.runtime import cpu_vendor

    assert out == ("5" if cpu_vendor() == "AuthenticAMD" else "")


@pytest.mark.parametrize("onednn_on", ["1", "0"])  # oneDNN's pool; Paddle's argmax path
def test_training_maxpool_equals_plain_pool_exactly(onednn_on, monkeypatch):
    import paddle
    import paddle.nn.functional as F

    from backend.onednn import MaxPool2D

    monkeypatch.setenv("TOWERNET_ONEDNN", onednn_on)
    rng = np.random.default_rng(0)
    # Rounded, post-ReLU values: many windows hold tied maxima (zeros and repeated values).
    x = np.maximum(np.round(rng.standard_normal((4, 8, 9, 9)), 0), 0).astype(np.float32)
    # Integer upstream gradients: where stride-1 windows overlap, sums are exact in any order.
    def g(shape):
        return rng.integers(-3, 4, shape)

    for stride in (2, 1):
        pool = MaxPool2D(3, stride=stride, padding=1)
        xa = paddle.to_tensor(x, stop_gradient=False)
        xb = paddle.to_tensor(x, stop_gradient=False)
        ya = pool(xa)
        yb = F.max_pool2d(xb, 3, stride, 1)
        dy = paddle.to_tensor(g(ya.shape).astype(np.float32))
        (ya * dy).sum().backward()
        (yb * dy).sum().backward()
        np.testing.assert_array_equal(ya.numpy(), yb.numpy())
        np.testing.assert_array_equal(xa.grad.numpy(), xb.grad.numpy())
        pool.eval()
        np.testing.assert_array_equal(pool(xa).numpy(), yb.numpy())


KEEP_HEAP_PROBE = r"""
import ctypes, app
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2().hblks
block = libc.malloc(64 << 20)  # above glibc's largest mmap threshold (32 MB)
from app.util import runtime; print(runtime.HEAP_KEPT, libc.mallinfo2().hblks - before)
"""


def test_app_keeps_large_blocks_in_the_heap():
    import ctypes

    if not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(None), "mallinfo2"):
        import pytest

        pytest.skip("needs glibc >= 2.33 (mallinfo2)")

    def probe(**env):
        out = subprocess.run([sys.executable, "-c", KEEP_HEAP_PROBE], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT), **env}, check=True,
                             capture_output=True, text=True, timeout=120).stdout.split()
        return out[0], int(out[1])

    assert probe() == ("True", 0)  # no mmapped block: served from the heap
    kept, mmapped = probe(TOWERNET_SYSTEM_MALLOC="1")
    assert kept == "False" and mmapped == 1  # glibc's default: a 64 MB block is an mmap
