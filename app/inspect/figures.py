"""Plain-text tables and matplotlib figures (confusion matrices, curves, image grids).

Every PNG is written atomically; the ``*_image`` / ``plot_*`` functions also return the
figure as uint8 RGB for VisualDL."""
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from app.data.images import read_rgb
from app.util.atomic import atomic_path


def save_figure(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def figure_rgb(fig, path=None) -> np.ndarray:
    """The figure as uint8 RGB [H, W, 3] (for VisualDL's images); also saved to ``path`` if given."""
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    if path is not None:
        save_figure(fig, path)
    else:
        plt.close(fig)
    return rgb


def format_table(rows: list, columns: list) -> str:
    """A plain-text table; ``columns`` are (header, key, format) triples."""
    cells = [[h for h, _, _ in columns]]
    for row in rows:
        cells.append([("-" if row.get(k) is None else fmt.format(row[k]))
                      for _, k, fmt in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                       enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_confusion_matrix(cm: np.ndarray, classes: list, path) -> None:
    figure_rgb(_confusion_figure(cm, classes), path)


def confusion_image(cm: np.ndarray, classes: list) -> np.ndarray:
    """The confusion matrix figure as uint8 RGB (small, for VisualDL)."""
    fig = _confusion_figure(cm, classes)
    fig.set_dpi(72)
    return figure_rgb(fig)


def _confusion_figure(cm: np.ndarray, classes: list):
    n = len(classes)
    size = max(5.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = cm.max() if cm.size else 0
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > top / 2 else "black")
    ax.set_title(f"confusion matrix ({cm.sum()} images, top-1 "
                 f"{np.trace(cm) / max(cm.sum(), 1):.3f})")
    return fig


def plot_misclassified(items: list, path, limit: int = 36) -> None:
    """A grid of (image path, true, predicted, confidence) tuples; a note if none."""
    items = items[:limit]
    cols = min(6, max(1, len(items)))
    rows = max(1, math.ceil(len(items) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if not items:
        axes[0, 0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    for ax, (image_path, true, pred, conf) in zip(axes.flat, items):
        image = read_rgb(image_path)
        image.thumbnail((160, 160))
        ax.imshow(np.asarray(image))
        ax.set_title(f"true: {true}\npred: {pred} ({conf:.2f})", fontsize=7)
    save_figure(fig, path)


def plot_curves(runs: list, path, key: str = "curve", ylabel: str = "eval top-1") -> None:
    """One line per run: ``run[key]`` is a list of (epoch, value)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        epochs, values = zip(*run[key])
        ax.plot(epochs, values, marker="o" if len(epochs) < 20 else None, ms=3,
                label=run["run"])
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def write_comparison(runs: list, out_dir) -> str:
    """Print-ready table of runs and ``compare.png`` of their eval-accuracy curves."""
    columns = [("run", "run", "{}"), ("model", "model", "{}"), ("params", "params", "{:,}"),
               ("epochs", "epochs", "{}"), ("best top-1", "best_acc", "{:.4f}"),
               ("at epoch", "best_epoch", "{}"), ("final top-1", "final_acc", "{:.4f}"),
               ("epoch s", "epoch_seconds", "{:.1f}"), ("img/s", "train_images_per_s", "{:.1f}")]
    plot_curves(runs, Path(out_dir) / "compare.png")
    return format_table(runs, columns)


def plot_study_curves(runs: list, path) -> None:
    """Eval top-1 per epoch: the mean over seeds per model, with a min-max band."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    models = sorted({r["model"] for r in runs})
    for name in models:
        curves = [[row["eval_acc"] for row in r["rows"]] for r in runs if r["model"] == name]
        length = min(len(c) for c in curves)
        acc = np.array([c[:length] for c in curves])
        epochs = np.arange(1, length + 1)
        line, = ax.plot(epochs, acc.mean(0), label=f"{name} (n={len(curves)})")
        ax.fill_between(epochs, acc.min(0), acc.max(0), color=line.get_color(), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("eval top-1 (mean, min-max over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def thumbnail(image_path, size: int) -> np.ndarray:
    """The image as the model saw it (RGB, square ``size``), uint8 HWC."""
    return np.asarray(read_rgb(image_path).resize((size, size)))


def plot_attention_grid(originals: list, titles: list, maps: list, path=None) -> np.ndarray:
    """Rows: images; columns: the image, then one panel per attention layer (a heatmap
    overlay for spatial maps, scaled per panel with its range in the title; a bar chart
    of channel weights for channel attention). Returns uint8 RGB; saved to ``path`` if given."""
    rows, cols = len(originals), 1 + len(maps)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.4 * rows), squeeze=False)
    for r, (image, title) in enumerate(zip(originals, titles)):
        axes[r, 0].imshow(image)
        axes[r, 0].set_title(title, fontsize=7)
        axes[r, 0].axis("off")
        for c, layer in enumerate(maps, start=1):
            ax, values = axes[r, c], layer["values"][r]
            if layer["kind"] == "channel":
                ax.bar(np.arange(len(values)), np.nan_to_num(values), width=1.0)
                ax.set_ylim(0, 1)
                ax.set_xticks([])
                ax.tick_params(labelsize=6)
            else:
                v = np.nan_to_num(values, nan=np.nanmin(values) if np.isfinite(values).any()
                                  else 0.0)
                lo, hi = float(v.min()), float(v.max())
                norm = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
                heat = np.asarray(Image.fromarray((norm * 255).astype(np.uint8)).resize(
                    image.shape[1::-1], Image.BILINEAR)) / 255.0
                ax.imshow(image)
                ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
                ax.axis("off")
                ax.text(0.02, 0.02, f"{lo:.2f}-{hi:.2f}", transform=ax.transAxes, fontsize=6,
                        color="white", backgroundcolor="black")
            if r == 0:
                shape = "x".join(map(str, values.shape))
                unit = "channels" if layer["kind"] == "channel" else "map"
                ax.set_title(f"{layer['name']}\n{unit} {shape}", fontsize=6)
    return figure_rgb(fig, path)


def overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """``image`` (uint8 HWC) under a jet heatmap of ``cam`` (any size, values in [0, 1])."""
    heat = np.asarray(Image.fromarray((np.clip(cam, 0, 1) * 255).astype(np.uint8)).resize(
        image.shape[1::-1], Image.BILINEAR)) / 255.0
    colour = plt.get_cmap("jet")(heat)[..., :3]
    return (0.5 * image / 255.0 + 0.5 * colour).clip(0, 1)


def plot_gradcam_grid(originals: list, row_titles: list, columns: list, path) -> np.ndarray:
    """Rows: images (titled with their true class); one column per run. ``columns`` are
    dicts {"name", "cams" [N, h, w] in [0, 1], "titles" [N]}. Returns the figure as uint8 RGB."""
    rows, cols = len(originals), len(columns)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols + 0.6, 2.3 * rows), squeeze=False)
    for c, column in enumerate(columns):
        axes[0, c].set_title(f"{column['name']}\n{column['titles'][0]}", fontsize=7)
        for r, image in enumerate(originals):
            ax = axes[r, c]
            ax.imshow(overlay(image, column["cams"][r]))
            ax.set_xticks([]), ax.set_yticks([])
            if r:
                ax.set_title(column["titles"][r], fontsize=7)
            if c == 0:
                ax.set_ylabel(row_titles[r], fontsize=7)
    return figure_rgb(fig, path)
