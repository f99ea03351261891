"""Rebuild a trained model from its run folder; evaluate it, predict images, compare runs."""
from pathlib import Path

import numpy as np
import paddle
from PIL import Image

from app import report
from app.atomic import atomic_write_json
from app.data import ImageFolderDataset, build_transform, read_rgb
from app.engine import build_loader, build_network, predict_probs, view_probs
from app.errors import UserError
from app.checkpoint import check_best, load_state_dict, read_json
from app.ema import split_checkpoint
from app.metrics import classification_report
from models import upgrade_state_dict


def find_checkpoint(run=None, checkpoint=None) -> tuple:
    """(weights path, meta dict) for ``--run DIR`` (its best model) or ``--checkpoint FILE``.

    A checkpoint's meta is the JSON beside it with the same stem (best.pdparams ->
    best.json); for last.pdparams the run's best.json is used (same model, same data).
    """
    if run is not None:
        run = Path(run)
        if not run.is_dir():
            raise UserError(f"run folder not found: {run}")
        weights, meta_path = run / "best.pdparams", run / "best.json"
    else:
        weights = Path(checkpoint)
        if not weights.is_file():
            raise UserError(f"checkpoint not found: {weights}")
        meta_path = weights.with_suffix(".json")
        if not meta_path.is_file():
            meta_path = weights.parent / "best.json"
    if not meta_path.is_file() or not weights.is_file():
        raise UserError(f"{weights.parent}: no best.json/best.pdparams (has the run finished "
                        f"an epoch?)")
    meta = read_json(meta_path, "it is written atomically, so it was changed by hand: restore "
                                "it, or evaluate another checkpoint")
    check_best(weights, meta)
    if meta_path.stem != weights.stem:  # best.json stands in: its epoch and accuracy are best's
        meta = {**meta, "eval_acc": None,
                "epoch": _state_epoch(weights.parent) if weights.name == "last.pdparams" else None}
    return weights, meta


def _state_epoch(run_dir: Path):
    """The last finished epoch that ``state.json`` records (what last.pdparams holds), or None."""
    path = run_dir / "state.json"
    try:
        return int(read_json(path, "")["epoch"]) if path.is_file() else None
    except (UserError, KeyError, TypeError, ValueError):  # damaged: the epoch is unknown
        return None


def load_network(weights, meta: dict) -> paddle.nn.Layer:
    """The run's network with ``weights`` loaded (earlier resnet50_<att> key layouts mapped)."""
    network = build_network(meta["model"], meta["num_classes"], meta.get("model_kwargs"))
    state, _ = upgrade_state_dict(load_state_dict(
        weights, "evaluate another checkpoint (--checkpoint RUN/last.pdparams) or train again"))
    trained, average, _ = split_checkpoint(state)
    state = average or trained  # a last.pdparams with an EMA evaluates its average, as training did
    network.set_state_dict(state)
    network.eval()
    return network


def eval_dataset(meta: dict, data=None) -> ImageFolderDataset:
    root = data or meta["data_root"]
    ds = ImageFolderDataset(root, "eval", image_size=meta["image_size"], train=False,
                            mean=meta["mean"], std=meta["std"])
    if list(ds.classes) != list(meta["classes"]):
        raise UserError(f"{root}: its classes differ from the ones the model was trained on")
    return ds


def evaluate_checkpoint(weights, meta: dict, out_dir, data=None, batch_size: int = 32,
                        flip: bool = False) -> dict:
    """Evaluate on the eval split; write eval.json, confusion_matrix.png, misclassified.png.
    ``flip``: average each image's probabilities with its mirror image's (test-time
    augmentation; the training logs and study reports never use it)."""
    out_dir = Path(out_dir)
    ds = eval_dataset(meta, data)
    network = load_network(weights, meta)
    probs, labels = predict_probs(network, build_loader(ds, batch_size, shuffle=False), flip)
    result = {"checkpoint": str(weights), "model": meta["model"], "epoch": meta.get("epoch"),
              "data": str(data or meta["data_root"]), "tta": "flip" if flip else "none",
              **classification_report(probs, labels, meta["classes"])}
    atomic_write_json(out_dir / "eval.json", result)
    report.plot_confusion_matrix(np.array(result["confusion_matrix"]), meta["classes"],
                                 out_dir / "confusion_matrix.png")
    wrong = np.flatnonzero(probs.argmax(1) != labels)
    items = [(ds.samples[i][0], meta["classes"][labels[i]],
              meta["classes"][probs[i].argmax()], float(probs[i].max())) for i in wrong]
    report.plot_misclassified(items, out_dir / "misclassified.png")
    return result


def load_image_batch(paths, meta: dict) -> np.ndarray:
    """Image files -> the eval-time preprocessed batch float32 [N, 3, S, S] that ``meta``
    (best.json, or an export's export.json) describes."""
    transform = build_transform(meta["image_size"], meta["mean"], meta["std"], train=False)
    batch = []
    for path in paths:
        try:
            batch.append(transform(read_rgb(path)))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise UserError(f"cannot read image {path}: {e}")
    return np.stack(batch)


def top_predictions(paths, probs: np.ndarray, classes, topk: int) -> list:
    """[(path, [(class, probability), ...]), ...]: the ``topk`` best classes of each row."""
    k = min(topk, probs.shape[1])
    return [(str(p), [(classes[j], float(row[j])) for j in np.argsort(-row)[:k]])
            for p, row in zip(paths, probs)]


def predict_files(weights, meta: dict, paths, topk: int = 5, flip: bool = False) -> list:
    """[(path, [(class, probability), ...]), ...] for each image file, best first (``flip``:
    averaged with the mirror image's)."""
    batch = paddle.to_tensor(load_image_batch(paths, meta))
    network = load_network(weights, meta)
    with paddle.no_grad():
        probs = view_probs(network, batch, flip)
    return top_predictions(paths, probs, meta["classes"], topk)


def collect_runs(roots) -> list:
    """Every run folder below ``roots`` (one folder or several) with a best.json and
    metrics.csv, as dicts."""
    from app.study import as_roots, read_runs, report_dir_name

    roots = as_roots(roots)
    for root in roots:
        if not root.is_dir():
            raise UserError(f"folder not found: {root}")
    runs = []
    for r in (run for root in roots for run in read_runs(root)):
        if not r["meta"]:
            continue
        rows, run_dir = r["rows"], r["dir"]
        best = max(rows, key=lambda row: row["eval_acc"])
        runs.append({
            "run": report_dir_name(run_dir, roots),
            "model": r["meta"]["model"], "params": r["meta"].get("params"),
            "epochs": len(rows), "best_acc": best["eval_acc"], "best_epoch": best["epoch"],
            "final_acc": rows[-1]["eval_acc"],
            "epoch_seconds": float(np.median([row["epoch_seconds"] for row in rows])),
            "train_images_per_s": float(np.median([row["train_images_per_s"] for row in rows])),
            "curve": [(row["epoch"], row["eval_acc"]) for row in rows],
        })
    if not runs:
        raise UserError(f"no finished runs (best.json + metrics.csv) below "
                        f"{', '.join(map(str, roots))}")
    return runs
