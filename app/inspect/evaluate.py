"""Rebuild a trained model from its run folder or a checkpoint; evaluate it, predict images."""
from pathlib import Path

import numpy as np
import paddle

from app.build.loader import build_loader
from app.build.network import build_network
from app.build.weights import load_state_dict, split_checkpoint
from app.data.dataset import ImageFolderDataset
from app.inspect import figures
from app.inspect.classification import classification_report
from app.inspect.predict import load_image_batch, predict_probs, top_predictions, view_probs
from app.run.checkpoint import check_best
from app.run.folder import RunFolder, read_json
from app.util.atomic import atomic_write_json
from app.util.errors import UserError
from models import upgrade_state_dict


def find_checkpoint(run=None, checkpoint=None) -> tuple:
    """(weights path, meta dict) for ``--run DIR`` (its best model) or ``--checkpoint FILE``.

    A checkpoint's meta is the JSON beside it with the same stem (best.pdparams ->
    best.json); for last.pdparams the run's best.json is used (same model, same data).
    """
    if run is not None:
        folder = RunFolder(run)
        if not folder.path.is_dir():
            raise UserError(f"run folder not found: {folder}")
        weights, meta_path = folder.best_weights, folder.best_file
    else:
        weights = Path(checkpoint)
        if not weights.is_file():
            raise UserError(f"checkpoint not found: {weights}")
        folder = RunFolder(weights.parent)
        meta_path = weights.with_suffix(".json")
        if not meta_path.is_file():
            meta_path = folder.best_file
    if not meta_path.is_file() or not weights.is_file():
        raise UserError(f"{weights.parent}: no best.json/best.pdparams (has the run finished "
                        f"an epoch?)")
    meta = read_json(meta_path, "it is written atomically, so it was changed by hand: restore "
                                "it, or evaluate another checkpoint")
    check_best(weights, meta)
    if meta_path.stem != weights.stem:  # best.json stands in: its epoch and accuracy are best's
        meta = {**meta, "eval_acc": None,
                "epoch": _state_epoch(folder) if weights == folder.last_weights else None}
    return weights, meta


def _state_epoch(run: RunFolder):
    """The last finished epoch that state.json records (what last.pdparams holds), or None."""
    try:
        return int(run.read_state()["epoch"]) if run.state_file.is_file() else None
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
    figures.plot_confusion_matrix(np.array(result["confusion_matrix"]), meta["classes"],
                                 out_dir / "confusion_matrix.png")
    wrong = np.flatnonzero(probs.argmax(1) != labels)
    items = [(ds.samples[i][0], meta["classes"][labels[i]],
              meta["classes"][probs[i].argmax()], float(probs[i].max())) for i in wrong]
    figures.plot_misclassified(items, out_dir / "misclassified.png")
    return result


def predict_files(weights, meta: dict, paths, topk: int = 5, flip: bool = False) -> list:
    """[(path, [(class, probability), ...]), ...] for each image file, best first (``flip``:
    averaged with the mirror image's)."""
    batch = paddle.to_tensor(load_image_batch(paths, meta))
    network = load_network(weights, meta)
    with paddle.no_grad():
        probs = view_probs(network, batch, flip)
    return top_predictions(paths, probs, meta["classes"], topk)
