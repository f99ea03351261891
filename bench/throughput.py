"""Training and inference throughput of a registered model, built and stepped as train.py does.

    python bench/throughput.py --model towernet_simam --image-size 128 --batch-size 32
                               [--steps N] [--rounds R] [--json] [--reference torch|torch-cl]
                               [--data SPLIT_DIR] [-o section.key=value ...]

train: the config train.py would resolve (default.yaml <- the model's or family's YAML <- -o),
``resolve_settings`` (device, threads, layout, AMP), ``build_network``, ``build_model`` and hapi's
``Model.train_batch`` on a fixed random batch, plus the per-step lr update, i.e. what
``Model.fit`` runs per batch minus the data and the callbacks. infer: eval mode, no_grad, as
``app.inspect.predict.predict_logits``. Each round times ``--steps`` steps after 2 warm-up steps; the
figure is the median step of the best round (the machine may be shared; the rounds say how
noisy it was); against a reference, also the ratio within each round (the two ran back to back)
and the median of those. ``--reference torch`` builds the same network in PyTorch
(bench/torch_towernet.py: towernet, towernet_simam, resnet50, mobilenet_v2; only if torch is
importable; ``torch-cl`` in channels_last, and under CPU autocast bfloat16 when ``-o
train.amp=bf16``) and times it in the same rounds, interleaved, with the same thread count,
in a child process of its own (bench/torch_towernet.py says why). ``--data``
also times one epoch of the train loader alone (``ImageFolderDataset`` + ``build_loader``,
cache and workers as configured), and real epochs (that loader feeding the training step)
against pure compute (the same batches, held in memory, through the same step).
``--attention-share`` also times the network's attention modules alone (forward + backward,
train mode, on the input shapes one training step gives them, in the same rounds) and
reports their share of the training step.
``--json`` prints one JSON object per line per framework (train_img_s, infer_img_s, ...).

A benchmark, not a test: figures depend on the machine. Measurements: docs/speed.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import app  # noqa: F401  (environment defaults; must come before paddle)

# isort: split
import numpy as np
import paddle

from app.build.device import available_cores
from app.build.loader import build_loader
from app.build.network import build_network
from app.build.settings import Settings, norm_stats, resolve_settings
from app.config.load import load_config, parse_override
from app.data.augment import MixBatch
from app.data.dataset import train_dataset
from app.train.trainer import build_model
from app.util.errors import UserError, exit_on_user_error
from backend import fused, onednn
from bench.timing import timed

WARMUP = 2


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="towernet_simam")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=16)
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data", help="split folder: also time its train loader, and real epochs "
                                   "against pure compute")
    p.add_argument("--reference", choices=["torch", "torch-cl"],
                   help="time the same network in PyTorch (torch-cl: channels_last)")
    p.add_argument("--attention-share", action="store_true",
                   help="also time the attention modules alone: their share of the train step")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--recipe", help="training recipe, as in train.py (its augmentation shows "
                                    "in the --data loader and epoch figures)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, as in train.py (e.g. -o train.threads=1)")
    return p.parse_args(argv)


def paddle_runner(cfg: dict, settings: Settings, num_classes: int, batch: tuple):
    """(network, train_step, infer, train_on) exactly as train.py builds and steps the model.

    train_step and infer use the fixed ``batch``; ``train_on(images, labels)`` steps on a
    loader's batch.
    """
    network = build_network(cfg["model"]["name"], num_classes, cfg["model"]["kwargs"],
                            settings.channels_last)
    model = build_model(cfg, network, num_classes, 1000, settings.amp_configs)
    optimizer = model._optimizer
    x, y = paddle.to_tensor(batch[0]), paddle.to_tensor(batch[1])

    def train_on(images, labels):
        network.train()
        loss = model.train_batch([images], [labels])  # numpy out: the step has finished
        optimizer._learning_rate.step()  # hapi's fit steps the schedule every batch
        return loss

    def train_step():
        return train_on(x, y)

    @paddle.no_grad()
    def infer():
        network.eval()
        return network(x).numpy()

    return network, train_step, infer, train_on


def attention_runner(network, x: np.ndarray):
    """(names, fn): forward + backward of ``network``'s attention modules on one step's inputs."""
    from models.attention import _ATTENTIONS

    kinds = tuple(_ATTENTIONS.values())
    seen = []
    # each call as the host made it: its input's shape and any further arguments ("NHWC")
    hooks = [layer.register_forward_post_hook(lambda layer, inputs, out: seen.append((layer, inputs[0].shape,
                                                                                      inputs[1:])))
             for layer in network.sublayers() if isinstance(layer, kinds)]
    network.train()
    network(paddle.to_tensor(x))
    for hook in hooks:
        hook.remove()
    rng = np.random.default_rng(1)
    calls = [(layer, paddle.to_tensor(rng.standard_normal(shape, dtype=np.float32), stop_gradient=False),
              paddle.to_tensor(rng.standard_normal(shape, dtype=np.float32)), rest) for layer, shape, rest in seen]

    def step():
        for layer, inp, grad, rest in calls:
            layer(inp, *rest).backward(grad)
            inp.clear_gradient()

    return [f"{type(layer).__name__}{list(inp.shape)}{''.join(' ' + str(a) for a in rest)}"
            for layer, inp, _, rest in calls], step


TWINS = ("towernet", "towernet_simam", "resnet50", "mobilenet_v2")  # bench/torch_towernet.py


class TorchReference:
    """The PyTorch twin in a child process (bench/torch_towernet.py), stepped round by round.

    ``kind`` torch: PyTorch eager's default NCHW; torch-cl: channels_last model and input. A
    run with ``train.amp=bf16`` times the twin's training step under CPU autocast bfloat16.
    """

    def __init__(self, cfg: dict, num_classes: int, threads: int, steps: int, kind: str = "torch") -> None:
        if importlib.util.find_spec("torch") is None:
            raise UserError(f"--reference {kind}: torch is not importable in this environment "
                            "(install it into a separate venv; the project does not need it)")
        if cfg["model"]["name"] not in TWINS:
            raise UserError(f"--reference {kind}: no PyTorch twin of {cfg['model']['name']} "
                            f"({', '.join(TWINS)})")
        setup = {"model": cfg["model"]["name"], "num_classes": num_classes, "threads": threads,
                 "channels_last": kind == "torch-cl", "bf16": cfg["train"]["amp"] == "bf16",
                 "image_size": cfg["data"]["image_size"], "batch_size": cfg["train"]["batch_size"],
                 "optimizer": {k: cfg["optimizer"][k] for k in ("lr", "momentum", "weight_decay")},
                 "seed": cfg["train"]["seed"], "warmup": WARMUP, "steps": steps}
        script = Path(__file__).with_name("torch_towernet.py")
        self.proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self._send(json.dumps(setup))

    def _send(self, line: str) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        if not reply:
            raise UserError(f"--reference: the PyTorch process exited "
                            f"(code {self.proc.wait()}); see its error above")
        return json.loads(reply)

    def round(self) -> dict:
        return self._send("round")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def loader_epochs(cfg: dict, data: str, train_on) -> dict:
    """The train loader alone (no model) for one epoch, then real epochs against pure compute.

    Real: the loader feeding ``train_on``, as ``Model.fit`` runs it. Pure compute: the same
    steps on the same epoch's batches, read into memory beforehand. Two of each, alternating;
    the faster of each counts. The held batches cost one epoch of float32 images in memory.
    """
    d, t = cfg["data"], cfg["train"]
    start = time.perf_counter()
    # augmented and normalised as train.py does (recipe pieces)
    ds = train_dataset(d, data, norm_stats(d, cfg["model"]), progress=False)
    build_s = time.perf_counter() - start
    loader = build_loader(ds, t["batch_size"], True, d["num_workers"], seed=t["seed"],
                          collate_fn=MixBatch.from_config(t, len(ds.classes)))
    start = time.perf_counter()
    seen = sum(images.shape[0] for images, _ in loader)
    seconds = time.perf_counter() - start
    held = list(loader)

    def epoch(batches) -> float:
        start = time.perf_counter()
        for images, labels in batches:
            train_on(images, labels)
        return time.perf_counter() - start

    epoch(held[-1:])  # kernels for the last, smaller batch
    real, compute = [], []
    for _ in range(2):
        real.append(epoch(loader))
        compute.append(epoch(held))
    return {"loader_images": seen, "loader_steps": len(held), "loader_epoch_s": seconds,
            "loader_img_s": seen / seconds, "dataset_build_s": build_s,
            "real_epochs_s": [round(r, 2) for r in real], "compute_epochs_s": [round(c, 2) for c in compute],
            "real_epoch_s": min(real), "epoch_compute_s": min(compute)}


def summarize(rounds: list[list[float]], batch_size: int) -> dict:
    medians = [statistics.median(r) for r in rounds]
    best = min(medians)
    return {"img_s": batch_size / best, "step_ms": 1000 * best,
            "rounds_img_s": [round(batch_size / m, 2) for m in medians]}


def setup(model: str, image_size: int, batch_size: int, num_classes: int = 16, override=(),
          recipe: str | None = None) -> tuple:
    """(cfg, batch, paddle_runner's four) for ``model`` as train.py would run it, on one
    fixed random batch; ``override``: ``-o KEY=VALUE`` strings."""
    overrides = [("data.image_size", image_size), ("train.batch_size", batch_size)]
    overrides += [parse_override(o) for o in override]
    cfg = load_config(model=model, overrides=overrides, recipe=recipe)
    settings = resolve_settings(cfg)  # device, threads, seeds, layout, AMP: as train.py does
    rng = np.random.default_rng(0)
    batch = (rng.standard_normal((batch_size, 3, image_size, image_size), dtype=np.float32),
             rng.integers(0, num_classes, (batch_size, 1)).astype(np.int64))
    return cfg, batch, paddle_runner(cfg, settings, num_classes, batch)


def run(args) -> list[dict]:
    cfg, batch, (network, train_step, infer, train_on) = setup(
        args.model, args.image_size, args.batch_size, args.num_classes, args.override, args.recipe)
    threads = cfg["train"]["threads"] or available_cores()
    s, bs = args.image_size, args.batch_size
    attention_calls, attention = (attention_runner(network, batch[0]) if args.attention_share
                                  else ([], None))
    if args.attention_share and not attention_calls:
        raise UserError(f"--attention-share: {args.model} runs no attention module")
    timed(train_step, WARMUP)
    timed(infer, 1)
    reference = None
    if args.reference:
        reference = TorchReference(cfg, args.num_classes, threads, args.steps, args.reference)
    names = ["paddle"] + ([args.reference] if reference else [])
    times = {name: {"train": [], "infer": []} for name in names}
    attention_times = []
    try:
        for _ in range(args.rounds):  # interleaved, so a busy spell hits every framework
            times["paddle"]["train"].append(timed(train_step, args.steps))
            times["paddle"]["infer"].append(timed(infer, args.steps))
            if attention:
                attention_times.append(timed(attention, args.steps))
            if reference:
                for phase, seconds in reference.round().items():
                    times[names[1]][phase].append(seconds)
    finally:
        if reference:
            reference.close()

    rows = []
    for name in names:
        train = summarize(times[name]["train"], bs)
        infer = summarize(times[name]["infer"], bs)
        rows.append({"framework": name, "model": args.model, "image_size": s, "batch_size": bs,
                     "threads": threads, "amp": cfg["train"]["amp"],
                     "layout": getattr(network, "data_format", "NCHW") if name == "paddle" else
                     ("NHWC" if name == "torch-cl" else "NCHW"), "train_img_s": train["img_s"],
                     "train_step_ms": train["step_ms"], "train_rounds_img_s": train["rounds_img_s"],
                     "infer_img_s": infer["img_s"], "infer_rounds_img_s": infer["rounds_img_s"]})
    if any(isinstance(m, onednn.BatchNormReLU6) for m in network.sublayers()):
        rows[0]["fused_bn_relu6"] = "on" if fused.load() is not None else f"off: {fused.reason()}"
    if attention:
        attention_ms = 1000 * min(statistics.median(r) for r in attention_times)
        rows[0].update(attention_calls=attention_calls, attention_ms=attention_ms,
                       attention_share=attention_ms / rows[0]["train_step_ms"])
    if reference:
        rows[0]["train_vs_torch"] = rows[0]["train_img_s"] / rows[1]["train_img_s"]
        rows[0]["infer_vs_torch"] = rows[0]["infer_img_s"] / rows[1]["infer_img_s"]
        # Each round's pair ran back to back, so a busy spell of a shared machine mostly hits
        # both: the per-round ratios, and their median, are steadier than best against best.
        for phase in ("train", "infer"):
            ratios = [round(statistics.median(t) / statistics.median(p), 3)
                      for p, t in zip(times["paddle"][phase], times[names[1]][phase])]
            rows[0][f"{phase}_vs_torch_rounds"] = ratios
            rows[0][f"{phase}_vs_torch_median"] = statistics.median(ratios)
    if args.data:
        loader = loader_epochs(cfg, args.data, train_on)
        compute_s = loader["epoch_compute_s"]
        rows[0].update(loader, loader_share=loader["loader_epoch_s"] / compute_s,
                       real_epoch_vs_compute=loader["real_epoch_s"] / compute_s)
    return rows


def format_table(rows: list[dict]) -> str:
    r0 = rows[0]
    lines = [f"{r0['model']}  {r0['image_size']} px  batch {r0['batch_size']}  "
             f"{r0['threads']} threads  amp {r0['amp']}",
             f"{'framework':<15} {'train img/s':>11} {'step ms':>8} {'infer img/s':>11}  "
             f"rounds (train img/s)"]
    for r in rows:
        lines.append(f"{r['framework'] + ' ' + r['layout']:<15} {r['train_img_s']:>11.1f} {r['train_step_ms']:>8.0f} "
                     f"{r['infer_img_s']:>11.1f}  {r['train_rounds_img_s']}")
    if "train_vs_torch" in r0:
        lines.append(f"paddle / {rows[1]['framework']}: train {r0['train_vs_torch']:.2f}x, "
                     f"infer {r0['infer_vs_torch']:.2f}x (best round each)")
        lines.append(f"  paired by round: train median {r0['train_vs_torch_median']:.2f}x "
                     f"{r0['train_vs_torch_rounds']}, infer median {r0['infer_vs_torch_median']:.2f}x")
    if "fused_bn_relu6" in r0:
        lines.append(f"BN + ReLU6 kernel (backend/fused.py): {r0['fused_bn_relu6']}")
    if "attention_ms" in r0:
        lines.append(f"attention alone (fwd+bwd, {len(r0['attention_calls'])} calls): "
                     f"{r0['attention_ms']:.1f} ms a step = {100 * r0['attention_share']:.1f}% of the train step")
    if "loader_epoch_s" in r0:
        lines.append(f"loader: {r0['loader_images']} images in {r0['loader_epoch_s']:.1f}s "
                     f"({r0['loader_img_s']:.0f} img/s; dataset built in "
                     f"{r0['dataset_build_s']:.1f}s); epoch compute {r0['epoch_compute_s']:.1f}s; "
                     f"loader = {100 * r0['loader_share']:.1f}% of compute")
        lines.append(f"real epochs (loader + steps) {r0['real_epochs_s']} s, pure compute (same "
                     f"batches held in memory) {r0['compute_epochs_s']} s: real = "
                     f"{r0['real_epoch_vs_compute']:.2f}x compute")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.steps < 1 or args.rounds < 1:
        raise UserError("--steps and --rounds must be at least 1")
    rows = run(args)
    if args.json:
        for r in rows:
            print(json.dumps(r), flush=True)
    else:
        print(format_table(rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_user_error(main))
