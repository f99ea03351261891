"""One training run: hapi ``Model.fit`` with our callbacks, into a run folder that survives a kill.

:func:`train` reads as its steps: resolve the settings, load the data, build the network,
load the weights it starts from, find where it resumes, build the loop (loaders, optimizer,
hapi model), open or create the run folder, make the callbacks, fit, finish. The files of a
run folder are app/run/folder.py's.
"""
from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from pathlib import Path

import paddle

from app.build.device import broadcast_from_main, is_main_process, world_size
from app.build.loader import build_loader
from app.build.model import prepare_model
from app.build.network import build_network
from app.build.optimizer import build_optimizer
from app.build.pretrained import load_pretrained, scale_backbone_lr, summary_line
from app.build.settings import Settings, resolve_settings
from app.build.weights import load_state_dict, split_checkpoint
from app.config.load import check_name
from app.data.augment import MixBatch
from app.data.dataset import train_and_eval
from app.data.split import split_fingerprint
from app.inspect.predict import predict_probs
from app.run import checkpoint
from app.run.folder import RunFolder
from app.train import callbacks as cb
from app.train import visualdl
from app.train.ema import ModelEMA
from app.util.errors import UserError
from backend import onednn
from models.summary import count_macs, count_params


class RunStopped(Exception):
    """Training stopped early (Ctrl-C or a non-finite loss); ``exit_code`` says which."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Loop:
    """What ``Model.fit`` runs: the loaders and the prepared hapi model."""
    train_loader: paddle.io.DataLoader
    eval_loader: paddle.io.DataLoader
    model: paddle.Model


def train(cfg: dict, run_dir=None, force_data: bool = False, exact_name: bool = False) -> Path:
    """Train ``cfg`` into a new run folder, or continue ``run_dir`` from its last epoch.

    A new run goes to OUTPUT/<name>, or <name>-2, -3, ... when that is taken; with
    ``exact_name`` (a study's runs, whose names are their seeds) only to OUTPUT/<name>, and
    a name taken meanwhile (another study on the same folder got there first) raises
    :class:`~app.run.lock.RunBusy`, so two studies started at once never train one seed twice.

    Returns the run folder. Raises :class:`RunStopped` on Ctrl-C or a non-finite loss,
    after making sure the last finished epoch's checkpoint is on disk. Rank 0 holds the run
    folder's lock from before its first write.

    Runs in a fresh scope of Paddle's generated names: last.pdopt is keyed by structured
    parameter names (app/run/checkpoint.py), so resuming does not depend on the scope; it is
    kept for checkpoints written before that, keyed by generated names
    (conv2d_0.w_0_velocity_0), which a process that built other models first (a study) would
    otherwise look for as conv2d_57.w_0_velocity_2.
    """
    try:
        with paddle.utils.unique_name.guard(), contextlib.ExitStack() as locks:
            run = RunFolder(run_dir) if run_dir is not None else None
            return _train(cfg, run, force_data, locks, exact_name)
    finally:
        onednn.set_bf16_training(False)  # train.amp=bf16 on a CPU holds for this run only


def _train(cfg: dict, run: RunFolder | None, force_data: bool, locks: contextlib.ExitStack,
           exact_name: bool) -> Path:
    main, resume = is_main_process(), run is not None
    if resume and main:
        locks.enter_context(run.lock())
    settings = resolve_settings(cfg, resume)
    train_ds, eval_ds = train_and_eval(cfg["data"], settings.norm_stats)
    network = build_network(cfg["model"]["name"], len(train_ds.classes), cfg["model"]["kwargs"],
                            settings.channels_last)
    start_from = _start_weights(cfg["model"], network, run, settings.pretrained_file)
    epochs = cfg["train"]["epochs"]
    state, start, prefix = _resume_point(run, cfg["data"]["root"], epochs, force_data, main)
    if start >= epochs:
        return _already_trained(run, network, eval_ds, state, start, epochs, main)
    loaded = start_from["loaded"] if start_from else []
    loop = _build_loop(cfg, settings, network, train_ds, eval_ds, start, loaded)
    if resume:
        ema_weights, ema_updates = checkpoint.load_resume_checkpoint(loop.model, run, prefix)
    else:
        ema_weights, ema_updates = None, 0
        run = _create_run(cfg, loop.model, state, start_from, exact_name, main, locks)
    meta = _best_meta(cfg, train_ds, network, settings, start_from)
    ema = ModelEMA(network, cfg["train"]["ema_decay"], ema_weights, ema_updates) \
        if cfg["train"]["ema_decay"] else None
    callbacks = _callbacks(cfg, run, loop, train_ds, eval_ds, start, loaded, meta, state, ema, main)
    _fit(loop, callbacks, epochs - start, run, main)
    if ema is not None:
        ema.use_average()  # what best.pdparams, the logged eval and export hold
    if main:
        write_predictions(network, eval_ds, run)
        run.mark("finished")
    return run.path


def _start_weights(model: dict, network, run: RunFolder | None, file) -> dict | None:
    """The pretrained report: what of ``file`` was loaded into ``network`` (a new run), or
    what was, read back from pretrained.json (a resumed run, whose weights are in its
    checkpoint). None for a run from scratch."""
    if not model["pretrained"]:
        return None
    if run is not None:
        return run.read_pretrained()
    report = load_pretrained(network, model["pretrained"], model["name"], file)
    if is_main_process():
        print(summary_line(report), flush=True)
    return report


def _resume_point(run: RunFolder | None, data_root, epochs: int, force_data: bool,
                  main: bool) -> tuple:
    """(state, epochs done, checkpoint prefix to load) of ``run`` (None: a new run).

    A resumed run must train on the split it started on (its fingerprint) unless
    ``force_data``; the newest whole checkpoint decides where it continues."""
    fingerprint = split_fingerprint(data_root)
    if run is None:
        return {"data_fingerprint": fingerprint}, 0, None
    state = run.read_state()
    recorded = state.get("data_fingerprint")
    if recorded and fingerprint != recorded and not force_data:
        raise UserError(f"--resume {run}: the data at {data_root} is not the split this run "
                        f"started on (classes, counts or files differ); point -o data.root at "
                        f"that split, or pass --force-data to continue anyway")
    state["data_fingerprint"] = fingerprint
    start, prefix = int(state.get("epoch", 0)), None
    if main:
        run.remove_stale_temporaries()
    if start < epochs:  # the newest whole checkpoint: last.*, else last-prev.*
        prefix, start = checkpoint.resume_checkpoint(run, state)
    return state, start, prefix


def _already_trained(run: RunFolder, network, eval_ds, state: dict, start: int, epochs: int,
                     main: bool) -> Path:
    """A resumed run with every epoch trained: finish what a kill after its last checkpoint
    left undone (predictions.csv, the finished mark)."""
    print(f"{run}: already finished ({start}/{epochs} epochs)")
    if state.get("status") != "finished":
        if main and not run.predictions_file.is_file():
            trained, average, _ = split_checkpoint(load_state_dict(run.last_weights,
                                                                   "start the run again"))
            network.set_state_dict(average or trained)
            write_predictions(network, eval_ds, run)
        if main:
            run.mark("finished")
    return run.path


def _build_loop(cfg: dict, settings: Settings, network, train_ds, eval_ds, start: int,
                loaded: list) -> Loop:
    """Loaders (a resumed run's shuffle continues where it stopped), the optimizer (loaded
    weights at ``optimizer.backbone_lr_mult``) and the prepared hapi model."""
    data, t = cfg["data"], cfg["train"]
    classes = len(train_ds.classes)
    train_loader = build_loader(train_ds, t["batch_size"], True, data["num_workers"],
                                seed=t["seed"], start_epoch=start,
                                collate_fn=MixBatch.from_config(t, classes))
    eval_loader = build_loader(eval_ds, t["batch_size"], False, data["num_workers"])
    scale_backbone_lr(network, loaded, cfg["optimizer"]["backbone_lr_mult"])
    model = build_model(cfg, network, classes, len(train_loader), settings.amp_configs)
    return Loop(train_loader, eval_loader, model)


def build_model(cfg: dict, network, num_classes: int, steps_per_epoch: int,
                amp_configs: dict | None = None) -> paddle.Model:
    """The hapi model ``train.py`` fits for ``cfg`` (also bench/throughput.py's): the optimizer
    of its ``optimizer`` section over its schedule, the loss and metrics, and ``amp_configs``
    (:attr:`Settings.amp_configs`; None is float32)."""
    t, opt = cfg["train"], cfg["optimizer"]
    optimizer = build_optimizer(opt, network, steps_per_epoch, t["epochs"], t["warmup_epochs"])
    return prepare_model(network, optimizer, image_size=cfg["data"]["image_size"],
                         num_classes=num_classes, amp_configs=amp_configs,
                         nam_penalty=opt["nam_penalty"], label_smoothing=t["label_smoothing"])


def _create_run(cfg: dict, model, state: dict, start_from: dict | None, exact_name: bool,
                main: bool, locks: contextlib.ExitStack) -> RunFolder:
    """The new run's folder with its config, pretrained report and epoch-0 checkpoint.

    Rank 0 picks the folder and tells the others: looking for themselves, they could find
    rank 0's new folder already there and pick name-2."""
    output = cfg["output"]["dir"]
    name = check_name(cfg["output"]["name"] or cfg["model"]["name"])
    if exact_name:
        run = RunFolder(Path(output) / name)
        if run.path.exists():
            raise run.taken()
    else:
        free = RunFolder.free_name(output, name).path if main else None
        run = RunFolder(broadcast_from_main(free))
    if main:
        def fill(folder: RunFolder) -> None:
            folder.write_config(cfg)
            if start_from:
                folder.write_pretrained(start_from)
            checkpoint.save_last(folder, model.network, model._optimizer, state, 0)

        run.create(fill)
        locks.enter_context(run.lock())  # after the rename: Windows refuses to rename a
        # folder with an open file in it
    return run


def _best_meta(cfg: dict, train_ds, network, settings: Settings, start_from: dict | None) -> dict:
    """What best.json records beside the epoch and accuracy: everything that rebuilds the model
    and preprocesses images for it (eval.py, export)."""
    return {"model": cfg["model"]["name"], "model_kwargs": cfg["model"]["kwargs"],
            "num_classes": len(train_ds.classes), "classes": list(train_ds.classes),
            "image_size": cfg["data"]["image_size"], "mean": list(train_ds.mean),
            "std": list(train_ds.std), "data_root": str(cfg["data"]["root"]),
            "fold": cfg["data"]["fold"], "folds": cfg["data"]["folds"],
            "params": count_params(network), "normalize": settings.normalize,
            "amp": cfg["train"]["amp"], "layout": getattr(network, "data_format", "NCHW"),
            "pretrained": ({"source": start_from["source"], "md5": start_from["md5"]}
                           if start_from else None)}


def _callbacks(cfg: dict, run: RunFolder, loop: Loop, train_ds, eval_ds, start: int,
               loaded: list, meta: dict, state: dict, ema, main: bool) -> list:
    """hapi callbacks in the order they must run; only rank 0 writes files."""
    t, network = cfg["train"], loop.model.network
    callbacks = [cb.EpochSeed(t["seed"], start), cb.NonFiniteLossGuard(start, world_size())]
    if loaded and t["freeze_epochs"]:
        callbacks.append(cb.FreezeBackbone(network, loaded, t["freeze_epochs"], start))
    rank_totals = None
    if world_size() > 1:
        rank_totals = cb.RankTrainTotals(world_size())
        callbacks += [cb.AverageRunningStats(), rank_totals]
    if main:
        rows = [r for r in run.read_metrics() if r["epoch"] <= start]
        if [r["epoch"] for r in rows] != list(range(1, start + 1)):
            raise UserError(f"{run.metrics_file} is damaged (its rows do not cover epochs "
                            f"1-{start}, which state.json says are done); restore it or start "
                            f"the run again")
        metrics = cb.EpochMetrics(run, start, t["epochs"], rows, rank_totals)
        steps = len(loop.train_loader)
        callbacks += [metrics,
                      _visualdl_logger(cfg, run, network, train_ds, eval_ds, rows, meta["params"],
                                       metrics, steps, start),
                      cb.SaveBest(run, metrics, meta, state, ema)]
        print(f"run {run}: {cfg['model']['name']} ({meta['params']:,} params), "
              f"{len(train_ds)} train / {len(eval_ds)} eval images, "
              f"{len(train_ds.classes)} classes, epochs {start + 1}-{t['epochs']}"
              f"{', channels-last' if meta['layout'] == 'NHWC' else ''}", flush=True)
    # The EMA comes after SaveBest: it swaps the trained weights back after each eval.
    return callbacks + ([ema] if ema is not None else [])


def _visualdl_logger(cfg: dict, run: RunFolder, network, train_ds, eval_ds, rows: list,
                     params: int, metrics, steps: int, start: int) -> visualdl.VisualDLLogger:
    """The VisualDL callback; the hparams record is written when a run starts only, so a
    resume does not count MACs."""
    hparams = None if rows else visualdl.hparams(
        cfg, params, count_macs(network, cfg["data"]["image_size"]) / 1e9)
    images = (visualdl.RunImages(network, train_ds, eval_ds, cfg["log"]["attention_every"],
                                 cfg["train"]["epochs"], cfg["train"]["seed"])
              if cfg["log"]["images"] else None)
    best = ({"acc": max(r["eval_acc"] for r in rows), "loss": min(r["eval_loss"] for r in rows)}
            if rows else None)
    return visualdl.VisualDLLogger(run, metrics, steps, start, cfg["train"]["log_freq"], hparams,
                                   images, best)


def _fit(loop: Loop, callbacks: list, epochs: int, run: RunFolder, main: bool) -> None:
    """``Model.fit``, its ways of stopping mapped to a :class:`RunStopped` with an exit code
    (130 Ctrl-C, 3 a non-finite loss, 4 a full disk) and the run's status."""
    interrupted = RunStopped(f"interrupted; the last finished epoch is saved. Continue with: "
                             f"python train.py --resume {run}", 130)
    try:
        loop.model.fit(loop.train_loader, loop.eval_loader, epochs=epochs, verbose=0,
                       callbacks=callbacks)
    except KeyboardInterrupt:
        _mark(run, main, "interrupted")
        raise interrupted from None
    except cb.NonFiniteLoss as e:
        _mark(run, main, "diverged")
        raise RunStopped(f"stopped: {e}; the last good checkpoints in {run} are kept "
                         f"(try a lower --lr)", 3) from e
    except OSError as e:
        if "KeyboardInterrupt" in str(e) and e.errno is None:
            # Ctrl-C inside a PyLayer's backward (the oneDNN convs): Paddle re-raises it as
            # an OSError naming the KeyboardInterrupt.
            _mark(run, main, "interrupted")
            raise interrupted from e
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # Every file is written to a temporary name and renamed: what was whole stays whole.
        raise RunStopped(f"stopped: the disk is full ({e.strerror}) while writing to {run}; "
                         f"the checkpoints saved before are intact. Free some space and "
                         f"continue with: python train.py --resume {run}", 4) from e


def _mark(run: RunFolder, main: bool, status: str) -> None:
    if main:
        run.mark(status)


def write_predictions(network, eval_ds, run: RunFolder) -> None:
    """predictions.csv: per eval image (path relative to the split) the label, the predicted
    class and the probabilities of both, from the final network."""
    loader = paddle.io.DataLoader(eval_ds, batch_size=64, shuffle=False, return_list=True)
    probs, labels = predict_probs(network, loader)
    preds = probs.argmax(1)
    run.write_predictions(
        (os.path.relpath(file, eval_ds.root), label, pred, p[label], p[pred])
        for (file, _), label, pred, p in zip(eval_ds.samples, labels, preds, probs))
