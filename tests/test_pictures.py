"""Every picture shows what happened: its values, not only its size.

The figures are caught as matplotlib Figures on their way to the PNG or to VisualDL, and
their content (texts, image data, line data) is checked against what is computed here
independently of app.inspect."""
import io
import json

import numpy as np
import pytest

from app.inspect import figures


@pytest.fixture
def caught(monkeypatch):
    """Every figure app.inspect.figures draws (still inspectable after it is closed)."""
    figs = []
    real_rgb, real_save = figures.figure_rgb, figures.save_figure

    def figure_rgb(fig, path=None):
        figs.append(fig)
        return real_rgb(fig, path)

    def save_figure(fig, path):
        if fig not in figs:
            figs.append(fig)
        return real_save(fig, path)

    monkeypatch.setattr(figures, "figure_rgb", figure_rgb)
    monkeypatch.setattr(figures, "save_figure", save_figure)
    return figs


def confusion_counts(fig) -> tuple:
    """(title, {(row, column): count}) of a confusion-matrix figure."""
    ax = fig.axes[0]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text())
             for t in ax.texts}
    return ax.get_title(), cells


def expected_cells(matrix) -> dict:
    m = np.asarray(matrix)
    return {(i, j): int(m[i, j]) for i in range(len(m)) for j in range(len(m)) if m[i, j]}


def test_eval_pictures_show_the_evaluation(tiny_run, tiny_split, tmp_path, caught):
    from test_train import direct_predictions

    from app.inspect.evaluate import evaluate_checkpoint, find_checkpoint

    runs, _ = tiny_run
    weights, meta = find_checkpoint(runs / "towernet_simam")
    result = evaluate_checkpoint(weights, meta, tmp_path)
    matrix_fig, wrong_fig = caught
    pred, labels = direct_predictions(runs / "towernet_simam", tiny_split)
    expected = np.zeros((len(meta["classes"]),) * 2, int)
    np.add.at(expected, (labels, pred), 1)
    assert result["confusion_matrix"] == expected.tolist()
    title, cells = confusion_counts(matrix_fig)
    assert title == f"confusion matrix ({len(labels)} images, top-1 {(pred == labels).mean():.3f})"
    assert cells == expected_cells(expected)
    classes = meta["classes"]
    shown = sorted(ax.get_title().split(" (")[0] for ax in wrong_fig.axes if ax.get_title())
    assert shown == sorted(f"true: {classes[t]}\npred: {classes[p]}"
                           for t, p in zip(labels, pred) if t != p)


def test_the_logged_confusion_matrix_counts_the_eval_it_is_logged_for(tiny_split, tmp_path, monkeypatch):
    """At every new best epoch the dashboard's confusion matrix holds that eval's counts: its
    total is the eval images, its diagonal over the total that epoch's top-1 in metrics.csv,
    and the picture in the record file is that matrix drawn."""
    from PIL import Image
    from visualdl import LogReader

    from app.config.load import load_config
    from app.run.folder import RunFolder
    from app.train import trainer

    logged = []
    real = figures.confusion_image
    monkeypatch.setattr(figures, "confusion_image",
                        lambda cm, classes: logged.append(np.array(cm)) or real(cm, classes))
    cfg = load_config(model="towernet", overrides=[
        ("data.root", str(tiny_split)), ("output.dir", str(tmp_path)), ("train.epochs", 4),
        ("data.image_size", 32), ("train.batch_size", 12), ("data.cache", False),
        ("log.attention_every", 0)])
    run = RunFolder(trainer.train(cfg))
    rows = run.read_metrics()
    best_epochs, best = [], -1.0
    for r in rows:
        if r["eval_acc"] > best:
            best_epochs.append(r["epoch"])
            best = r["eval_acc"]
    assert len(logged) == len(best_epochs) >= 1
    for matrix, epoch in zip(logged, best_epochs):
        assert matrix.sum() == 12  # the eval split's images
        assert np.trace(matrix) / matrix.sum() == pytest.approx(rows[epoch - 1]["eval_acc"], abs=1e-6)
    (records,) = run.record_files()
    pictures = LogReader(file_path=str(records)).get_data("image", "eval/confusion_matrix_best")
    assert [p.id for p in pictures] == best_epochs
    drawn = np.asarray(Image.open(io.BytesIO(pictures[-1].image.encoded_image_string)).convert("RGB"))
    classes = sorted(p.name for p in (tiny_split / "eval").iterdir())
    assert np.array_equal(drawn, real(logged[-1], classes))
    empty = real(np.zeros_like(logged[-1]), classes)
    assert drawn.shape != empty.shape or not np.array_equal(drawn, empty)


def test_the_training_samples_grid_shows_the_training_images(tiny_split):
    from app.data.dataset import ImageFolderDataset
    from app.train.visualdl import TRAIN_SAMPLES, RunImages
    from models import create_model

    train = ImageFolderDataset(tiny_split, "train", image_size=32, cache=True, rotation=0,
                               hflip=False, progress=False)
    evaluation = ImageFolderDataset(tiny_split, "eval", image_size=32, train=False)
    grid = RunImages(create_model("towernet", num_classes=4), train, evaluation, 0, 1,
                     seed=3).train_grid()
    picks = np.random.default_rng(3).choice(len(train), size=TRAIN_SAMPLES, replace=False)
    for k, i in enumerate(picks):  # 4 x 4 tiles of 32 px with a 2-pixel gutter
        r, c = divmod(k, 4)
        tile = grid[2 + r * 34: 2 + r * 34 + 32, 2 + c * 34: 2 + c * 34 + 32].astype(int)
        assert np.abs(tile - train.cache[i].astype(int)).max() <= 1  # the image, not augmented


def test_the_attention_grid_shows_each_layers_map(tiny_run, tiny_split, caught):
    from app.data.dataset import ImageFolderDataset
    from app.inspect.attention_maps import attention_grid, capture
    from app.inspect.evaluate import find_checkpoint, load_network

    runs, _ = tiny_run
    weights, meta = find_checkpoint(runs / "towernet_simam")
    network = load_network(weights, meta)
    ds = ImageFolderDataset(tiny_split, "eval", image_size=meta["image_size"], train=False,
                            mean=meta["mean"], std=meta["std"])
    maps, _ = attention_grid(network, ds, [0, 5], meta["classes"])
    (fig,) = caught
    independent = capture(network, np.stack([ds[0][0], ds[5][0]]))
    assert [m["name"] for m in maps] == [m["name"] for m in independent] and maps
    axes = np.array(fig.axes).reshape(2, 1 + len(maps))
    for row in range(2):
        for col, layer in enumerate(independent, start=1):
            ax, values = axes[row, col], layer["values"][row]
            if layer["kind"] == "channel":
                heights = [p.get_height() for p in ax.patches]
                np.testing.assert_allclose(heights, np.nan_to_num(values), rtol=1e-5)
            else:
                lo, hi = np.nanmin(values), np.nanmax(values)
                assert ax.texts[0].get_text() == f"{lo:.2f}-{hi:.2f}"
                heat = np.asarray(ax.images[1].get_array())
                assert heat.min() >= 0 and heat.max() <= 1 and (hi == lo or heat.max() > 0.9)


def test_the_gradcam_grid_shows_each_runs_gradcam(tiny_run, tmp_path, caught):
    from app.data.picks import pick_images
    from app.inspect.evaluate import eval_dataset, find_checkpoint, load_network
    from app.inspect.gradcam import compare_gradcam, gradcam, normalise, target_layer
    from app.inspect.predict import load_image_batch

    runs, _ = tiny_run
    run = tmp_path / "run"
    import shutil

    shutil.copytree(runs / "towernet_simam", run)
    weights, meta = find_checkpoint(run)
    compare_gradcam([(run, weights, meta)], 3, "pred", 0, tmp_path)
    (fig,) = caught
    ds = eval_dataset(meta)
    paths = [p for p, _ in pick_images(ds.samples, meta["classes"], 3, 0)]
    network = load_network(weights, meta)
    cams, _ = gradcam(network, load_image_batch(paths, meta), None,
                      target_layer(network, meta["image_size"])[1])
    for ax, path, cam in zip(fig.axes, paths, cams):
        shown = np.asarray(ax.images[0].get_array())
        expected = figures.overlay(figures.thumbnail(path, meta["image_size"]), normalise(cam))
        np.testing.assert_allclose(shown, expected, atol=1e-6)


def test_curves_plot_the_runs_accuracies(tmp_path, caught):
    runs = [{"run": "a", "curve": [(1, 0.5), (2, 0.7)]}, {"run": "b", "curve": [(1, 0.4), (2, 0.9)]}]
    figures.plot_curves(runs, tmp_path / "compare.png")
    study = [{"model": "m", "rows": [{"eval_acc": a} for a in accs]}
             for accs in ([0.5, 0.7, 0.8], [0.3, 0.9, 0.6])]
    figures.plot_study_curves(study, tmp_path / "study_curves.png")
    compare, curves = caught
    assert [list(line.get_ydata()) for line in compare.axes[0].lines] == [[0.5, 0.7], [0.4, 0.9]]
    (mean,) = curves.axes[0].lines
    np.testing.assert_allclose(mean.get_ydata(), [0.4, 0.8, 0.7])
    band = curves.axes[0].collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(0.3) and band.max() == pytest.approx(0.9)
    assert json.dumps([line.get_label() for line in curves.axes[0].lines]) == '["m (n=2)"]'
