"""One training run: data, model, hapi ``fit`` with our callbacks, resume, Ctrl-C, NaN stop.

A run directory holds config.yaml, metrics.csv, VisualDL records, last.pdparams/.pdopt,
state.json ({epoch, status, best_acc, best_epoch}), best.pdparams and best.json.
"""
import contextlib
import errno
import json
import os
import shutil
from pathlib import Path

import paddle
import yaml

from app import callbacks as cb
from app import checkpoint
from app import pretrained
from app.atomic import atomic_write_json, atomic_write_text
from app.config import complete_run_config, load_config, save_config
from app.augment import Augment, MixBatch
from app.ema import ModelEMA, split_checkpoint
from app.data import ImageFolderDataset, split_fingerprint
from app.engine import (amp_configs_for, broadcast_from_main, build_loader, build_optimizer,
                        check_model_name, is_main_process, prepare_model, seed_everything,
                        select_device, training_network, use_channels_last, world_size)
from app.errors import UserError
from app.runlock import RunBusy, RunLock
from models.summary import count_params


class RunStopped(Exception):
    """Training stopped early (Ctrl-C or a non-finite loss); ``exit_code`` says which."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def new_run_dir(output_dir, name: str) -> Path:
    """OUTPUT/name, or OUTPUT/name-2, -3, ... when that folder already exists."""
    output_dir = Path(output_dir)
    candidate, i = output_dir / name, 1
    while candidate.exists():
        i += 1
        candidate = output_dir / f"{name}-{i}"
    return candidate


def _taken(run_dir: Path) -> RunBusy:
    return RunBusy(f"{run_dir} was started by another process meanwhile (another study on the "
                   f"same output?); it trains there, this process leaves it alone")


def load_state(run_dir) -> dict:
    """state.json of ``run_dir`` ({} if none); a damaged one is a one-line UserError."""
    path = Path(run_dir) / "state.json"
    if not path.is_file():
        return {}
    return checkpoint.read_json(path, "it is written atomically, so it was changed by hand: "
                                      "restore it, or move the run folder away and start again")


def resume_config(run_dir) -> dict:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "state.json").is_file():
        raise UserError(f"--resume {run_dir}: not a run folder (no config.yaml/state.json)")
    path = run_dir / "config.yaml"
    hint = "restore it (it is the run's resolved config) or start the run again"
    try:
        written = yaml.safe_load(path.read_text(encoding="utf-8", errors="replace"))
    except yaml.YAMLError:
        raise UserError(f"{path} is damaged (not valid YAML); {hint}") from None
    # A run's config.yaml is complete; a cut one would silently resume on default values.
    if not complete_run_config(written):
        raise UserError(f"{path} is damaged (empty or cut short); {hint}")
    return load_config(path)


def normalization(cfg: dict) -> str:
    """``split`` or ``imagenet``: ``auto`` is imagenet for ImageNet weights, else the split's."""
    norm = cfg["data"]["normalize"]
    if norm == "auto":
        return "imagenet" if cfg["model"]["pretrained"] == "imagenet" else "split"
    return norm


def train_dataset(cfg: dict, root=None, progress: bool = True) -> ImageFolderDataset:
    """The training split as ``cfg`` augments and normalises it (also used by bench/)."""
    d = cfg["data"]
    stats = (dict(mean=pretrained.IMAGENET_MEAN, std=pretrained.IMAGENET_STD)
             if normalization(cfg) == "imagenet" else {})
    return ImageFolderDataset(root or d["root"], "train", image_size=d["image_size"],
                              cache=d["cache"], rotation=d["rotation"], hflip=d["hflip"],
                              augment=Augment.from_config(d), progress=progress, **stats)


def train_collate(cfg: dict, num_classes: int):
    """The training batches' collate: mixup / CutMix when on (app/augment.py), else None."""
    t = cfg["train"]
    if not (t["mixup_alpha"] or t["cutmix_alpha"]):
        return None
    return MixBatch(num_classes, t["mixup_alpha"], t["cutmix_alpha"], t["mix_prob"],
                    t["mix_switch_prob"])


def load_datasets(cfg: dict):
    d = cfg["data"]
    train = train_dataset(cfg)
    evaluation = ImageFolderDataset(d["root"], "eval", train=False, mean=train.mean,
                                    std=train.std, image_size=d["image_size"], cache=d["cache"])
    if evaluation.classes != train.classes:
        raise UserError(f"{d['root']}: train and eval class folders differ")
    return train, evaluation


def train(cfg: dict, run_dir=None, force_data: bool = False, exact_name: bool = False) -> Path:
    """Train ``cfg`` (see :func:`_train`) in a fresh scope of Paddle's generated names.

    last.pdopt is keyed by structured parameter names (app/checkpoint.py), so resuming does
    not depend on the scope; it is kept for checkpoints written before that, keyed by
    generated names (conv2d_0.w_0_velocity_0), which a process that built other models
    first (a study) would otherwise look for as conv2d_57.w_0_velocity_2.
    """
    import paddle

    from backend import onednn

    try:
        with paddle.utils.unique_name.guard(), contextlib.ExitStack() as locks:
            return _train(cfg, run_dir, force_data, locks, exact_name)
    finally:
        onednn.set_bf16_training(False)  # train.amp=bf16 on a CPU holds for this run only


def _train(cfg: dict, run_dir, force_data: bool, locks: contextlib.ExitStack,
           exact_name: bool = False) -> Path:
    """Train ``cfg`` into a new run folder, or continue ``run_dir`` from its last epoch.

    A new run goes to OUTPUT/<name>, or <name>-2, -3, ... when that is taken; with
    ``exact_name`` (a study's runs, whose names are their seeds) only to OUTPUT/<name>, and
    a name taken meanwhile (another study on the same folder got there first) raises
    :class:`RunBusy`, so two studies started at once never train one seed twice.

    Returns the run folder. Raises :class:`RunStopped` on Ctrl-C or a non-finite loss,
    after making sure the last finished epoch's checkpoint is on disk. Rank 0 holds the
    run folder's lock (app/runlock.py) in ``locks`` from before its first write.
    """
    resume = run_dir is not None
    main = is_main_process()
    if resume and main:
        locks.enter_context(RunLock(run_dir))
    check_model_name(cfg["model"]["name"])
    device = select_device(cfg["train"]["device"], cfg["train"]["threads"])
    amp_configs_for(cfg["train"]["amp"])  # refuses AMP on a CPU before the data is loaded
    use_channels_last(cfg["train"]["channels_last"], cfg["model"]["name"], device)  # and a layout
    seed_everything(cfg["train"]["seed"])
    source = cfg["model"]["pretrained"]
    # Found (or downloaded) before the data is loaded, so that a missing file fails at once.
    source_path = pretrained.resolve_source(source, cfg["model"]["name"]) if source and not resume else None
    train_ds, eval_ds = load_datasets(cfg)
    network = training_network(cfg, len(train_ds.classes), device)
    start_from = _start_from(cfg, network, run_dir, source_path)

    state = load_state(run_dir) if resume else {}
    fingerprint = split_fingerprint(cfg["data"]["root"])
    recorded = state.get("data_fingerprint")
    if resume and recorded and fingerprint != recorded and not force_data:
        raise UserError(f"--resume {run_dir}: the data at {cfg['data']['root']} is not the split "
                        f"this run started on (classes, counts or files differ); point "
                        f"-o data.root at that split, or pass --force-data to continue anyway")
    state["data_fingerprint"] = fingerprint
    start = int(state.get("epoch", 0))
    epochs, t = cfg["train"]["epochs"], cfg["train"]
    if resume and main:
        checkpoint.remove_stale_temporaries(run_dir)
    if resume and start < epochs:  # the newest whole checkpoint: last.*, else last-prev.*
        prefix, start = checkpoint.resume_checkpoint(run_dir, state)
    if resume and start >= epochs:
        print(f"{run_dir}: already finished ({start}/{epochs} epochs)")
        if state.get("status") != "finished":  # stopped after its last checkpoint
            if main and not (Path(run_dir) / "predictions.csv").is_file():
                trained, average, _ = split_checkpoint(checkpoint.load_state_dict(
                    Path(run_dir) / "last.pdparams", "start the run again"))
                network.set_state_dict(average or trained)
                write_predictions(network, eval_ds, Path(run_dir) / "predictions.csv")
            _mark(run_dir, main, "finished")
        return Path(run_dir)
    train_loader = build_loader(train_ds, t["batch_size"], True, cfg["data"]["num_workers"],
                                seed=t["seed"], start_epoch=start,
                                collate_fn=train_collate(cfg, len(train_ds.classes)))
    eval_loader = build_loader(eval_ds, t["batch_size"], False, cfg["data"]["num_workers"])
    loaded = start_from["loaded"] if start_from else []
    pretrained.scale_backbone_lr(network, loaded, cfg["optimizer"]["backbone_lr_mult"])
    optimizer = build_optimizer(cfg, network, len(train_loader))
    model = prepare_model(network, cfg, len(train_ds.classes), optimizer)

    if resume:
        ema_weights, ema_updates = checkpoint.load_resume_checkpoint(model, run_dir, prefix)
    else:
        name = cfg["output"]["name"] or cfg["model"]["name"]
        # Rank 0 picks the folder and tells the others: looking for themselves, they could
        # find rank 0's new folder already there and pick name-2.
        if exact_name:
            run_dir = Path(cfg["output"]["dir"]) / name
            if run_dir.exists():
                raise _taken(run_dir)
        else:
            run_dir = broadcast_from_main(new_run_dir(cfg["output"]["dir"], name) if main else None)
        if main:
            # Made under a hidden name and renamed whole: a kill here never leaves a run
            # folder without its state.json (which --resume and studies would refuse).
            tmp = run_dir.with_name(f".{run_dir.name}.creating-{os.getpid()}")
            tmp.mkdir(parents=True)
            save_config(cfg, tmp / "config.yaml")
            if start_from:
                atomic_write_json(tmp / "pretrained.json", start_from)
            cb.save_last(tmp, model, state, 0)
            try:
                os.rename(tmp, run_dir)
            except OSError:  # another process renamed its (never empty) folder there meanwhile
                if not run_dir.exists():
                    raise
                shutil.rmtree(tmp)
                raise _taken(run_dir) from None
            locks.enter_context(RunLock(run_dir))  # after the rename: Windows refuses to
            # rename a folder with an open file in it
    run_dir = Path(run_dir)
    meta = {"model": cfg["model"]["name"], "model_kwargs": cfg["model"]["kwargs"],
            "num_classes": len(train_ds.classes), "classes": list(train_ds.classes),
            "image_size": cfg["data"]["image_size"], "mean": list(train_ds.mean),
            "std": list(train_ds.std), "data_root": str(cfg["data"]["root"]),
            "fold": cfg["data"]["fold"], "folds": cfg["data"]["folds"],
            "params": count_params(network), "normalize": normalization(cfg),
            "amp": cfg["train"]["amp"], "layout": getattr(network, "data_format", "NCHW"),
            "pretrained": ({"source": start_from["source"], "md5": start_from["md5"]}
                           if start_from else None)}

    callbacks = [cb.EpochSeed(t["seed"], start), cb.NonFiniteLossGuard(start, world_size())]
    if loaded and t["freeze_epochs"]:
        callbacks.append(pretrained.FreezeBackbone(network, loaded, t["freeze_epochs"], start))
    ema = None
    if t["ema_decay"]:  # after SaveBest in the list (it swaps the trained weights back)
        ema = ModelEMA(network, t["ema_decay"], *((ema_weights, ema_updates) if resume else ()))
    rank_totals = None
    if world_size() > 1:
        rank_totals = cb.RankTrainTotals(world_size())
        callbacks += [cb.AverageRunningStats(), rank_totals]
    if main:
        rows = [r for r in cb.read_metrics(run_dir / "metrics.csv") if r["epoch"] <= start]
        if [r["epoch"] for r in rows] != list(range(1, start + 1)):
            raise UserError(f"{run_dir / 'metrics.csv'} is damaged (its rows do not cover "
                            f"epochs 1-{start}, which state.json says are done); restore it or "
                            f"start the run again")
        metrics = cb.EpochMetrics(run_dir, start, epochs, rows, rank_totals)
        callbacks += [metrics,
                      cb.VisualDLLogger(run_dir, metrics, len(train_loader), start,
                                        t["log_freq"], *_dashboard(cfg, network, train_ds,
                                                                   eval_ds, rows, meta["params"])),
                      cb.SaveBest(run_dir, metrics, meta, state, ema)]
        print(f"run {run_dir}: {cfg['model']['name']} ({meta['params']:,} params), "
              f"{len(train_ds)} train / {len(eval_ds)} eval images, "
              f"{len(train_ds.classes)} classes, epochs {start + 1}-{epochs}"
              f"{', channels-last' if meta['layout'] == 'NHWC' else ''}", flush=True)
    interrupted = RunStopped(f"interrupted; the last finished epoch is saved. Continue with: "
                             f"python train.py --resume {run_dir}", 130)
    try:
        model.fit(train_loader, eval_loader, epochs=epochs - start, verbose=0,
                  callbacks=callbacks + ([ema] if ema is not None else []))
    except KeyboardInterrupt:
        _mark(run_dir, main, "interrupted")
        raise interrupted
    except cb.NonFiniteLoss as e:
        _mark(run_dir, main, "diverged")
        raise RunStopped(f"stopped: {e}; the last good checkpoints in {run_dir} are kept "
                         f"(try a lower --lr)", 3)
    except OSError as e:
        if "KeyboardInterrupt" in str(e) and e.errno is None:
            # Ctrl-C inside a PyLayer's backward (the oneDNN convs): Paddle re-raises it as
            # an OSError naming the KeyboardInterrupt.
            _mark(run_dir, main, "interrupted")
            raise interrupted
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # Every file is written to a temporary name and renamed: what was whole stays whole.
        raise RunStopped(f"stopped: the disk is full ({e.strerror}) while writing to {run_dir}; "
                         f"the checkpoints saved before are intact. Free some space and "
                         f"continue with: python train.py --resume {run_dir}", 4)
    if ema is not None:
        ema.use_average()  # what best.pdparams, the logged eval and export hold
    if main:
        write_predictions(network, eval_ds, run_dir / "predictions.csv")
    _mark(run_dir, main, "finished")
    return run_dir


def write_predictions(network, eval_ds, path) -> None:
    """predictions.csv: per eval image (path relative to the split) the label, the predicted
    class and the probabilities of both, from the final network (atomically)."""
    import csv
    import io

    from app.engine import predict_probs

    loader = paddle.io.DataLoader(eval_ds, batch_size=64, shuffle=False, return_list=True)
    probs, labels = predict_probs(network, loader)
    preds = probs.argmax(1)
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["path", "label", "pred", "prob_label", "prob_pred"])
    for (file, _), label, pred, p in zip(eval_ds.samples, labels, preds, probs):
        out.writerow([os.path.relpath(file, eval_ds.root), int(label), int(pred),
                      f"{p[label]:.6f}", f"{p[pred]:.6f}"])
    atomic_write_text(path, buf.getvalue())


def _dashboard(cfg: dict, network, train_ds, eval_ds, rows: list, params: int) -> tuple:
    """(hparams, images, best so far) for the VisualDL callback (app/dashboard.py); the
    hparams record is written when a run starts only, so a resume does not count MACs."""
    from app import dashboard
    from models.summary import count_macs

    hparams = None if rows else dashboard.hparams(
        cfg, params, count_macs(network, cfg["data"]["image_size"]) / 1e9)
    images = (dashboard.RunImages(network, train_ds, eval_ds, cfg["log"]["attention_every"],
                                  cfg["train"]["epochs"], cfg["train"]["seed"])
              if cfg["log"]["images"] else None)
    best = ({"acc": max(r["eval_acc"] for r in rows), "loss": min(r["eval_loss"] for r in rows)}
            if rows else None)
    return hparams, images, best


def _start_from(cfg: dict, network, run_dir, source_path) -> "dict | None":
    """The pretrained report: loaded into ``network`` for a new run, read back on resume."""
    if not cfg["model"]["pretrained"]:
        return None
    if run_dir is not None:  # the weights are in last.pdparams; what was loaded is recorded
        path = Path(run_dir) / "pretrained.json"
        if not path.is_file():
            raise UserError(f"--resume {run_dir}: config.yaml names model.pretrained but "
                            f"pretrained.json is missing")
        return json.loads(path.read_text())
    report = pretrained.load_pretrained(network, cfg["model"]["pretrained"], cfg["model"]["name"],
                                        source_path)
    if is_main_process():
        print(pretrained.summary_line(report), flush=True)
    return report


def _mark(run_dir, main: bool, status: str) -> None:
    if main:
        state = load_state(run_dir)
        state["status"] = status
        cb.write_state(run_dir, state)
