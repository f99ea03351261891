"""Deployment: export a trained model as a Paddle inference model or ONNX; run either on the CPU.

``export_model(weights, meta, out_dir, fmt="paddle")`` writes ``out_dir/``:

    model.json + model.pdiparams   ``paddle.jit.save`` of the network with a softmax appended
                                   (Paddle 3's PIR program; older Paddle writes model.pdmodel)
    model.onnx                     with ``fmt="onnx"`` instead: that program converted by
                                   paddle2onnx (opset 13 by default), dynamic batch
    export.json                    format, classes, image size, mean/std, input/output description

ONNX needs ``pip install -r requirements-deploy.txt`` (paddle2onnx, onnxruntime); without it,
one line names that file. paddle2onnx's default post-conversion step (polygraphy constant
folding) pip-installs packages from inside the conversion; we take the converted bytes
before that step, so nothing is ever installed at run time.

The input spec is ``[None, 3, S, S]`` with S the training image size: a fixed H and W, so the
static graph's shapes are known and TowerNet's choice of skipping attention on too-small maps
(models/towernet.py) is made once, as in training. ``load_predictor(out_dir)`` loads the
folder with ``paddle.inference`` (:class:`InferencePredictor`) or onnxruntime
(:class:`OnnxPredictor`) on the CPU; ``predict`` returns probabilities for a preprocessed batch.
"""
import json
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle.static import InputSpec

from app.build.device import available_cores
from app.inspect.evaluate import load_network
from app.inspect.predict import load_image_batch, top_predictions
from app.util.errors import UserError

EXPORT_META = "export.json"
MODEL_PREFIX = "model"
ONNX_FILE = "model.onnx"
OPSETS = range(7, 22)  # what paddle2onnx 2.1 writes
DEPLOY_HINT = "pip install -r requirements-deploy.txt"
PREPROCESS = ("RGB, resized to a square image_size x image_size (bilinear, aspect ratio not kept), "
              "scaled to [0, 1], then (x - mean) / std per channel, NCHW float32")


class SoftmaxHead(paddle.nn.Layer):
    """``network`` followed by a softmax over classes: the exported model returns probabilities."""

    def __init__(self, network: paddle.nn.Layer):
        super().__init__()
        self.network = network

    def forward(self, image):
        return F.softmax(self.network(image).astype("float32"), axis=-1)


def _check_target(out_dir: Path) -> None:
    """Refuse a file, or a non-empty folder that is not an earlier export (which is replaced)."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise UserError(f"export folder {out_dir}: a file is in the way; name a new folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / EXPORT_META).is_file():
        raise UserError(f"export folder {out_dir} exists and holds something other than an "
                        f"export; name a new or empty folder")


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        os.rename(tmp, out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    shutil.rmtree(old)


def _import_deploy(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise UserError(f"--format onnx needs {module}, which is not installed: "
                        f"{DEPLOY_HINT}") from None


def to_onnx(program: Path, params: Path, opset: int) -> bytes:
    """The ONNX bytes of a saved Paddle program, converted by paddle2onnx."""
    paddle2onnx = _import_deploy("paddle2onnx")
    _import_deploy("onnxruntime")  # refuse before converting what could not be run
    try:
        # save_file=None returns the bytes before paddle2onnx's optional optimizer (whose
        # default, polygraphy, pip-installs its dependencies at run time).
        with _stdout_to_stderr():  # its log lines would corrupt eval.py's and the bench's output
            onnx_bytes = paddle2onnx.export(str(program), str(params), None, opset_version=opset,
                                            auto_upgrade_opset=False, enable_onnx_checker=True)
    except UnboundLocalError:  # paddle2onnx logs the failure and has nothing to return
        onnx_bytes = None
    if not onnx_bytes:
        raise UserError(f"paddle2onnx could not convert this model at opset {opset} (its log "
                        f"above says why); try a higher --opset")
    return onnx_bytes


def export_model(weights, meta: dict, out_dir, fmt: str = "paddle", opset: int = 13) -> Path:
    """Export the checkpoint ``weights`` (with its best.json ``meta``) into ``out_dir``.

    ``fmt`` is ``paddle`` (an inference model) or ``onnx``. Everything is written into a
    temporary folder beside ``out_dir`` and renamed into place, so a crash never leaves half
    an export; an earlier export in ``out_dir`` is replaced.
    """
    if fmt not in ("paddle", "onnx"):
        raise UserError(f"--format must be paddle or onnx, got {fmt!r}")
    if fmt == "onnx" and opset not in OPSETS:
        raise UserError(f"--opset must be {OPSETS.start}-{OPSETS.stop - 1}, got {opset}")
    if fmt == "onnx":
        _import_deploy("paddle2onnx"), _import_deploy("onnxruntime")
    out_dir = Path(out_dir)
    _check_target(out_dir)
    model = SoftmaxHead(load_network(weights, meta))
    model.eval()
    size = meta["image_size"]
    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():  # left by a crashed export in a process with the same id
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as e:
        raise UserError(f"export folder {out_dir}: {e.strerror or e}") from None
    try:
        paddle.jit.save(model, str(tmp / MODEL_PREFIX),
                        input_spec=[InputSpec([None, 3, size, size], "float32", "image")])
        program = next(f"{MODEL_PREFIX}{ext}" for ext in (".json", ".pdmodel")
                       if (tmp / f"{MODEL_PREFIX}{ext}").is_file())
        files = {"program": program, "params": f"{MODEL_PREFIX}.pdiparams"}
        if fmt == "onnx":
            (tmp / ONNX_FILE).write_bytes(to_onnx(tmp / program, tmp / files["params"], opset))
            for name in files.values():
                (tmp / name).unlink()
            files = {"onnx": ONNX_FILE, "opset": opset}
        keys = ("model", "model_kwargs", "num_classes", "classes", "image_size", "mean", "std",
                "epoch", "eval_acc")
        info = {**{k: meta.get(k) for k in keys}, "checkpoint": str(weights), "format": fmt,
                **files,
                "input": {"name": "image", "shape": [None, 3, size, size],
                          "preprocess": PREPROCESS},
                "output": "softmax probabilities [N, num_classes], columns in `classes` order",
                "paddle_version": paddle.__version__}
        (tmp / EXPORT_META).write_text(json.dumps(info, indent=2) + "\n")
        _move_into_place(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir


@contextmanager
def _stdout_to_stderr():
    """File descriptor 1 (Python's and C++'s stdout) sent to stderr for the duration."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextmanager
def _stdout_silenced():
    """Send file descriptor 1 to /dev/null: Paddle 3.3.1's oneDNN mean kernel prints
    "ReduceMeanCheckIfOneDNNSupport" to stdout from C++ (on the first run of SimAM models),
    which would corrupt eval.py's output."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


class InferencePredictor:
    """An exported model (:func:`export_model`) run by ``paddle.inference`` on the CPU.

    ``meta`` is the folder's export.json (classes, image_size, mean, std, ...).
    """

    def __init__(self, model_dir, threads: int = 0):
        model_dir = Path(model_dir)
        self.meta = read_export_meta(model_dir)
        config = paddle.inference.Config(str(model_dir / self.meta["program"]),
                                         str(model_dir / self.meta["params"]))
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(threads or available_cores())
        config.disable_glog_info()
        self.predictor = paddle.inference.create_predictor(config)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities [N, num_classes] for a preprocessed float32 batch [N, 3, S, S]."""
        batch = _check_batch(batch, self.meta["image_size"])
        inputs = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        inputs.reshape(list(batch.shape))
        inputs.copy_from_cpu(batch)
        with _stdout_silenced():
            self.predictor.run()
        return self.predictor.get_output_handle(self.predictor.get_output_names()[0]).copy_to_cpu()


def _check_batch(batch: np.ndarray, size: int) -> np.ndarray:
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if batch.ndim != 4 or batch.shape[1:] != (3, size, size):
        raise ValueError(f"expected a batch [N, 3, {size}, {size}], got {batch.shape}")
    return batch


def read_export_meta(model_dir) -> dict:
    meta_path = Path(model_dir) / EXPORT_META
    if not meta_path.is_file():
        raise UserError(f"{model_dir}: not an exported model (no {EXPORT_META}); create one "
                        f"with: python eval.py --run RUN --export {model_dir}")
    try:
        return json.loads(meta_path.read_text())
    except ValueError as e:
        raise UserError(f"{meta_path} is damaged ({e}); export the model again") from None


class OnnxPredictor:
    """An ONNX export (``--format onnx``) run by onnxruntime on the CPU; same API as InferencePredictor."""

    def __init__(self, model_dir, threads: int = 0):
        ort = _import_deploy("onnxruntime")
        self.meta = read_export_meta(model_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or available_cores()
        options.log_severity_level = 3  # errors only: not its notes on paddle2onnx's spare initializers
        self.session = ort.InferenceSession(str(Path(model_dir) / self.meta["onnx"]), options,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities [N, num_classes] for a preprocessed float32 batch [N, 3, S, S]."""
        batch = _check_batch(batch, self.meta["image_size"])
        return self.session.run(None, {self.input_name: batch})[0]


def load_predictor(model_dir, threads: int = 0):
    """The predictor for an export folder: onnxruntime for model.onnx, else paddle.inference."""
    if read_export_meta(model_dir).get("format") == "onnx":
        return OnnxPredictor(model_dir, threads)
    return InferencePredictor(model_dir, threads)


def predict_files(model_dir, paths, topk: int = 5) -> list:
    """As :func:`app.inspect.evaluate.predict_files`, through the exported model in ``model_dir``."""
    predictor = load_predictor(model_dir)
    probs = predictor.predict(load_image_batch(paths, predictor.meta))
    return top_predictions(paths, probs, predictor.meta["classes"], topk)
