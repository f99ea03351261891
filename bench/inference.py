"""CPU inference images/s of one model three ways, in one run: dygraph, paddle.inference, onnxruntime.

    python bench/inference.py [--cases towernet_simam:128,towernet_simam:256,resnet50:224,mobilenet_v2:224]
                              [--batch-sizes 1,32] [--steps 10] [--rounds 3] [--json]

Each case builds the model with fresh weights (speed does not depend on them), exports it
exactly as ``eval.py --export`` does (softmax appended; ``--format onnx`` for onnxruntime)
into a temporary folder, and times a fixed random batch per batch size: dygraph in eval mode
under ``no_grad`` (what ``eval.py --run`` does, oneDNN backend included), the Paddle inference
model through ``paddle.inference`` (``eval.py --model-dir`` on a Paddle export), and the ONNX
model through onnxruntime (on an ONNX export). All three get the same thread count. The
figure is the median step of the best round, as in bench/throughput.py; the engines are
timed round by round, interleaved, so a busy machine slows all of them alike. Without
requirements-deploy.txt the onnxruntime column is left out.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import app  # noqa: F401  (environment defaults; must come before paddle)

# isort: split
import numpy as np
import paddle

from app.build.device import available_cores, select_device
from app.inspect import export
from app.util.errors import UserError, exit_on_user_error
from bench.timing import timed
from models import create_model


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="towernet_simam:128,towernet_simam:256,resnet50:224,mobilenet_v2:224",
                   help="comma-separated model:image_size")
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--steps", type=int, default=10, help="timed calls per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=16)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    return p.parse_args(argv)


def _have_onnx() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import paddle2onnx  # noqa: F401
    except ImportError:
        return False
    return True


def engines(model: str, size: int, classes: int, folder: Path) -> dict:
    """name -> predict(batch) for dygraph, paddle.inference and (if installed) onnxruntime."""
    paddle.seed(0)
    network = create_model(model, num_classes=classes)
    weights = folder / "w.pdparams"
    paddle.save(network.state_dict(), str(weights))
    meta = {"model": model, "model_kwargs": {}, "num_classes": classes,
            "classes": [str(i) for i in range(classes)], "image_size": size,
            "mean": [0.5] * 3, "std": [0.25] * 3}
    network.eval()

    def dygraph(batch):
        with paddle.no_grad():
            return paddle.nn.functional.softmax(network(paddle.to_tensor(batch))).numpy()

    out = {"dygraph": dygraph}
    out["paddle.inference"] = export.load_predictor(
        export.export_model(weights, meta, folder / "paddle")).predict
    if _have_onnx():
        out["onnxruntime"] = export.load_predictor(
            export.export_model(weights, meta, folder / "onnx", "onnx")).predict
    return out


def run(args) -> list[dict]:
    select_device("cpu")
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    rows = []
    for case in args.cases.split(","):
        model, _, size = case.partition(":")
        size = int(size or 224)
        with tempfile.TemporaryDirectory() as tmp:
            fns = engines(model, size, args.num_classes, Path(tmp))
            for batch_size in sizes:
                batch = np.random.default_rng(0).standard_normal(
                    (batch_size, 3, size, size)).astype(np.float32)
                reference = fns["dygraph"](batch)
                rounds = {name: [] for name in fns}
                for fn in fns.values():  # warm-up (primitive creation, first-run allocations)
                    fn(batch), fn(batch)
                for _ in range(args.rounds):
                    for name, fn in fns.items():
                        rounds[name].append(timed(lambda fn=fn, batch=batch: fn(batch), args.steps))
                for name, times in rounds.items():
                    step = min(statistics.median(r) for r in times)
                    rows.append({"model": model, "image_size": size, "batch_size": batch_size,
                                 "engine": name, "img_s": batch_size / step,
                                 "ms_per_batch": 1000 * step, "threads": available_cores(),
                                 "max_abs_diff_vs_dygraph": float(np.abs(
                                     fns[name](batch) - reference).max())})
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'model':<16}{'px':>5}{'batch':>6}  {'engine':<17}{'img/s':>9}{'ms/batch':>10}"
             f"{'max |diff|':>12}"]
    for r in rows:
        lines.append(f"{r['model']:<16}{r['image_size']:>5}{r['batch_size']:>6}  {r['engine']:<17}"
                     f"{r['img_s']:>9.1f}{r['ms_per_batch']:>10.1f}{r['max_abs_diff_vs_dygraph']:>12.1e}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.steps < 1 or args.rounds < 1:
        raise UserError("--steps and --rounds must be positive")
    rows = run(args)
    print("\n".join(json.dumps(r) for r in rows) if args.json else format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_user_error(main))
