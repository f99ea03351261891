"""Multi-seed studies, their report and verdicts, and attention-map capture."""
import json
import math
import shutil

import numpy as np
import paddle
import pytest
import yaml

from app.inspect.attention_maps import capture
from app.study.decide import critical_value
from app.study.report import to_markdown
from app.study.runs import mark_budgets
from app.study.significance import paired_verdict
from app.study.summary import one_change_pairs
from conftest import FAST_TRAIN, run_cli
from models import create_model
from models.attention import SE, SimAM


def test_paired_verdict_interval_matches_t_formula():
    diffs = [0.02, 0.04, 0.03]  # +2, +4, +3 points
    v = paired_verdict(diffs, "b", "a")
    d = np.array(diffs) * 100
    half = 4.303 * d.std(ddof=1) / math.sqrt(3)
    assert v["ci95_pp"] == pytest.approx([d.mean() - half, d.mean() + half])
    assert v["ci95_pp"][0] > 0 and "better" in v["verdict"]
    noisy = paired_verdict([0.05, -0.04, 0.01], "b", "a")
    assert noisy["ci95_pp"][0] < 0 < noisy["ci95_pp"][1] and "within run-to-run noise" in noisy["verdict"]
    worse = paired_verdict([-0.05, -0.06, -0.04], "b", "a")
    assert "worse" in worse["verdict"]
    assert "too few" in paired_verdict([0.1], "b", "a")["verdict"]
    # One image fewer right in each of 3 seeds (364 eval images): no spread, so no interval
    # and no "larger than the run-to-run spread" (the t interval would be a single point).
    same = paired_verdict([-1 / 364] * 3, "b", "a")
    assert "ci95_pp" not in same and "cannot be computed" in same["verdict"]
    assert "worse" not in same["verdict"] and same["mean_pp"] == pytest.approx(-100 / 364)


def test_study_trains_grid_skips_finished_and_resumes(tiny_split, tmp_path):
    out = tmp_path / "study"
    args = ["train.py", "--models", "towernet,towernet_simam", "--seeds", "0,1", "--data",
            tiny_split, "--epochs", "1", "--output", out, *FAST_TRAIN]
    run_cli(*args, check=True)
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == ["towernet-s0", "towernet-s1", "towernet_simam-s0", "towernet_simam-s1"]
    report = json.loads((out / "report.json").read_text())
    assert report["baseline"] == "towernet"
    simam = next(m for m in report["models"] if m["model"] == "towernet_simam")
    assert simam["seeds"] == [0, 1] and simam["vs_baseline"]["n"] == 2
    assert simam["params"] == next(m for m in report["models"]
                                   if m["model"] == "towernet")["params"]
    assert "| towernet_simam |" in (out / "report.md").read_text()
    assert (out / "study_curves.png").stat().st_size > 0
    seeds = [yaml.safe_load((out / n / "config.yaml").read_text())["train"]["seed"]
             for n in names]
    assert seeds == [0, 1, 0, 1]

    # An interrupted run (state says epoch 0, not finished) is resumed; finished ones skipped.
    before = (out / "towernet-s0" / "last.pdparams").stat().st_mtime_ns
    state_path = out / "towernet-s1" / "state.json"
    state = json.loads(state_path.read_text())
    state.update(status="interrupted", epoch=0)
    state_path.write_text(json.dumps(state))
    proc = run_cli(*args, check=True)
    assert proc.stdout.count("finished earlier, skipped") == 3
    assert "== towernet-s1" in proc.stdout
    assert json.loads(state_path.read_text())["status"] == "finished"
    assert (out / "towernet-s0" / "last.pdparams").stat().st_mtime_ns == before

    # The same study asked for another budget: refused before anything trains or is skipped,
    # whether the run of that name finished or was interrupted.
    state.update(status="interrupted", epoch=0)
    state_path.write_text(json.dumps(state))
    longer = [a if a != "1" or args[i - 1] != "--epochs" else "2" for i, a in enumerate(args)]
    for changed, key in ((longer, "train.epochs=1"), (args + ["--image-size", "40"], "data.image_size=")):
        proc = run_cli(*changed)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert key in proc.stderr and "another --output" in proc.stderr
        assert "==" not in proc.stdout and "skipped" not in proc.stdout
    assert json.loads(state_path.read_text())["status"] == "interrupted"
    assert (out / "towernet-s0" / "last.pdparams").stat().st_mtime_ns == before
    run_cli(*args, check=True)  # the run's own settings continue it

    (out / "report.md").unlink()
    run_cli("eval.py", "--compare", out, check=True)
    assert (out / "report.md").is_file()
    run_cli("eval.py", "--compare", out, "--out", tmp_path / "new" / "dir", check=True)
    assert (tmp_path / "new" / "dir" / "compare.png").is_file()
    proc = run_cli("eval.py", "--compare", out, "--out", state_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr

    # Runs in two study folders (say, from scratch and fine-tuned) compared as one study.
    before = json.loads((out / "report.json").read_text())
    other = tmp_path / "other"
    other.mkdir()
    for seed in (0, 1):
        shutil.move(str(out / f"towernet_simam-s{seed}"), str(other / f"towernet_simam-s{seed}"))
    both = tmp_path / "both"
    run_cli("eval.py", "--compare", out, other, "--out", both, check=True)
    joined = json.loads((both / "report.json").read_text())
    assert joined == {**before, "runs": joined["runs"]}  # the same statistics as before the move
    assert sorted(r["dir"] for r in joined["runs"]) == [
        "other/towernet_simam-s0", "other/towernet_simam-s1", "study/towernet-s0", "study/towernet-s1"]


def test_study_jobs_trains_runs_side_by_side_as_one_at_a_time_would(tiny_split, tmp_path):
    from app.build.device import available_cores
    from app.run.folder import RunFolder

    out = tmp_path / "study"
    args = ["train.py", "--models", "towernet,towernet_simam", "--seeds", "0", "--data", tiny_split,
            "--epochs", "2", "--output", out, "--jobs", "2", *FAST_TRAIN]
    proc = run_cli(*args, check=True)
    threads = max(1, available_cores() // 2)
    for name in ("towernet-s0", "towernet_simam-s0"):
        assert f"{name}: finished, final eval top-1" in proc.stdout
        assert "epoch 2/2" in (out / "logs" / f"{name}.log").read_text()
        assert yaml.safe_load((out / name / "config.yaml").read_text())["train"]["threads"] == threads
    report = json.loads((out / "report.json").read_text())
    assert sorted(m["model"] for m in report["models"]) == ["towernet", "towernet_simam"]

    # The same run trained alone with the same thread count: the same numbers.
    run_cli("train.py", "--model", "towernet_simam", "--seed", "0", "--data", tiny_split, "--epochs", "2",
            "--output", tmp_path / "alone", "-o", f"train.threads={threads}", *FAST_TRAIN, check=True)
    side, alone = (RunFolder(d / "towernet_simam").read_metrics() if d.name == "alone" else
                   RunFolder(d / "towernet_simam-s0").read_metrics() for d in (out, tmp_path / "alone"))
    for key in ("train_loss", "eval_loss", "eval_acc", "lr"):
        assert [r[key] for r in side] == [r[key] for r in alone], key

    proc = run_cli(*args, check=True)
    assert proc.stdout.count("finished earlier, skipped") == 2 and "== " not in proc.stdout

    # A user error inside a worker (here: no data) ends the study as one line, exit 2.
    proc = run_cli("train.py", "--models", "towernet", "--seeds", "0,1", "--data", tmp_path / "none",
                   "--output", tmp_path / "bad", "--jobs", "2", *FAST_TRAIN)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: towernet-s")


def test_study_follows_moved_data_and_refuses_another_split(tiny_split, tmp_path):
    from data_tools.split import split_dataset

    data, out = tmp_path / "data", tmp_path / "study"
    shutil.copytree(tiny_split, data)
    args = ["train.py", "--models", "towernet", "--seeds", "0", "--epochs", "1",
            "--output", out, *FAST_TRAIN]
    run_cli(*args, "--data", data, check=True)
    state_path = out / "towernet-s0" / "state.json"
    state = json.loads(state_path.read_text())
    state.update(status="interrupted", epoch=0)
    state_path.write_text(json.dumps(state))

    # The split moved: the interrupted run resumes on it where the study's --data now points.
    moved = tmp_path / "moved"
    data.rename(moved)
    proc = run_cli(*args, "--data", moved, check=True)
    assert "== towernet-s0" in proc.stdout
    assert json.loads(state_path.read_text())["status"] == "finished"

    # Another split under the study's --data (here: drawn with another seed): refused before
    # anything trains or is skipped, finished or interrupted, as another budget is.
    other = tmp_path / "other"
    split_dataset(tiny_split.parent / "src", other, eval_ratio=0.25, seed=1, progress=False)
    before = (out / "towernet-s0" / "last.pdparams").stat().st_mtime_ns
    for status in ("finished", "interrupted"):
        state = json.loads(state_path.read_text())
        state["status"] = status
        state_path.write_text(json.dumps(state))
        proc = run_cli(*args, "--data", other)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "holds another split" in proc.stderr and str(other) in proc.stderr
        assert "==" not in proc.stdout and "skipped" not in proc.stdout
    assert (out / "towernet-s0" / "last.pdparams").stat().st_mtime_ns == before


def test_a_study_moved_without_its_checkpoints_is_skipped_and_reported(tiny_split, tmp_path):
    """A study's finished runs need only their small files on another machine: the same
    command skips them and reports them as before."""
    out, moved = tmp_path / "study", tmp_path / "moved"
    args = ["train.py", "--models", "towernet", "--seeds", "0,1", "--epochs", "1",
            "--data", tiny_split, *FAST_TRAIN, "-o", "log.images=false"]
    run_cli(*args, "--output", out, check=True)
    shutil.copytree(out, moved, ignore=shutil.ignore_patterns("*.pdparams", "*.pdopt",
                                                              "vdlrecords*", "logs"))
    assert not list(moved.rglob("*.pdparams"))
    proc = run_cli(*args, "--output", moved, check=True)
    assert proc.stdout.count("finished earlier, skipped") == 2 and "== towernet" not in proc.stdout
    before, after = (json.loads((d / "report.json").read_text())["models"] for d in (out, moved))
    assert [m["final_mean"] for m in after] == [m["final_mean"] for m in before]
    assert after[0]["seeds"] == [0, 1]


def test_study_flag_errors_exit_2(tiny_split, tmp_path):
    for args in (["--models", "towernet,nope", "--seeds", "0"], ["--seeds", "a,b"], ["--jobs", "2"],
                 ["--seeds", "0", "--jobs", "0"]):
        proc = run_cli("train.py", *args, "--model", "towernet", "--data", tiny_split,
                       "--output", tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr


def test_capture_recovers_simam_weights_and_se_channel_gates():
    paddle.seed(0)
    x = paddle.randn([2, 8, 5, 5])
    simam = SimAM()
    net = paddle.nn.Sequential(simam)
    (rec,) = capture(net, x.numpy())
    xn = x.numpy()
    d = (xn - xn.mean(axis=(2, 3), keepdims=True)) ** 2
    y = d / (4 * (d.sum(axis=(2, 3), keepdims=True) / 24 + 1e-4)) + 0.5
    expected = (1 / (1 + np.exp(-y))).mean(axis=1)
    assert rec["kind"] == "spatial"
    np.testing.assert_allclose(rec["values"], expected, atol=1e-5)

    se = SE(32, reduction=4)
    x = paddle.randn([2, 32, 4, 4])
    (rec,) = capture(paddle.nn.Sequential(se), x.numpy())
    pooled = x.numpy().mean(axis=(2, 3))
    w1, w2 = se.fc1.weight.numpy(), se.fc2.weight.numpy()
    gate = 1 / (1 + np.exp(-(np.maximum(pooled @ w1, 0) @ w2)))
    assert rec["kind"] == "channel"
    np.testing.assert_allclose(rec["values"], gate, atol=1e-5)


def test_capture_finds_every_attention_layer_that_runs():
    net = create_model("towernet_cbam", num_classes=4)
    maps = capture(net, np.random.rand(2, 3, 128, 128).astype("float32"))
    assert [m["name"] for m in maps] == ["att3", "att4", "att5a", "att5b"]
    assert all(m["kind"] == "spatial" and m["values"].shape[0] == 2 for m in maps)


def test_eval_attention_maps_cli(tiny_run):
    runs, _ = tiny_run
    run = runs / "towernet_simam"
    proc = run_cli("eval.py", "--run", run, "--attention-maps", "3", check=True)
    assert "spatial" in proc.stdout
    assert (run / "attention_maps.png").stat().st_size > 0
    proc = run_cli("eval.py", "--run", run, "--attention-maps", "0")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_capture_maps_of_nonlocal_and_sam():
    from models.attention import SAM, NonLocal

    paddle.seed(0)
    x = paddle.randn([2, 8, 4, 6])
    nl = NonLocal(8, sub_sample=True)
    (rec,) = capture(paddle.nn.Sequential(nl), x.numpy())
    weights = nl.attention(x).numpy()  # [2, 24 queries, 2*3 keys]
    assert rec["kind"] == "spatial" and rec["values"].shape == (2, 2, 3)
    np.testing.assert_allclose(rec["values"], weights.mean(axis=1).reshape(2, 2, 3), atol=1e-6)
    np.testing.assert_allclose(rec["values"].sum(axis=(1, 2)), 1.0, atol=1e-5)

    sam = SAM(8)
    (rec,) = capture(paddle.nn.Sequential(sam), x.numpy())
    sam.eval()
    gate = paddle.nn.functional.sigmoid(sam.bn(sam.conv(x))).numpy().mean(axis=1)
    assert rec["kind"] == "spatial"
    np.testing.assert_allclose(rec["values"], gate, atol=1e-4)


def test_pretrained_runs_get_their_own_rows_and_folders():
    from app.study.runs import run_label, study_run_name

    cfg = {"model": {"name": "mobilenet_v2_ca", "pretrained": None}}
    assert run_label(cfg) == "mobilenet_v2_ca" and study_run_name("mobilenet_v2_ca", 1, cfg) == "mobilenet_v2_ca-s1"
    cfg["model"]["pretrained"] = "imagenet"
    assert run_label(cfg) == "mobilenet_v2_ca @imagenet"
    assert study_run_name("mobilenet_v2_ca", 1, cfg) == "mobilenet_v2_ca@imagenet-s1"
    cfg["model"]["pretrained"] = "/x/pretrain/mbv2-other68/last.pdparams"
    assert run_label(cfg) == "mobilenet_v2_ca @mbv2-other68"
    cfg["model"]["pretrained"] = "/x/weights/MobileNetV2_pretrained.pdparams"
    assert run_label(cfg) == "mobilenet_v2_ca @MobileNetV2_pretrained"


def fake_run(root, model, seed, accs, epochs=3, image_size=32, name=None, overrides=()):
    """A run folder with a config.yaml and a metrics.csv of these eval accuracies."""
    from app.config.load import dump, load_config
    from app.run.folder import RunFolder

    run = root / (name or f"{model}-s{seed}")
    run.mkdir(parents=True)
    cfg = load_config(model=model, overrides=[("train.epochs", epochs), ("train.seed", seed),
                                              ("data.image_size", image_size), *overrides])
    (run / "config.yaml").write_text(dump(cfg))
    RunFolder(run).write_metrics([
        {"epoch": i + 1, "train_loss": 1.0, "train_acc": 0.5, "eval_loss": 1.0, "eval_acc": a,
         "eval_top5": 1.0, "lr": 0.01, "epoch_seconds": 1.0, "train_images_per_s": 10.0}
        for i, a in enumerate(accs)])


def test_report_counts_only_runs_that_trained_all_their_epochs(tmp_path):
    from app.study.report import write_report

    fake_run(tmp_path, "towernet", 0, [0.5, 0.6, 0.7])
    fake_run(tmp_path, "towernet_se", 0, [0.5, 0.6, 0.8])
    fake_run(tmp_path, "towernet_se", 1, [0.1])  # still training: must not pull the mean down
    summary = write_report(tmp_path)
    se = next(m for m in summary["models"] if m["model"] == "towernet_se")
    assert se["seeds"] == [0] and se["final_mean"] == pytest.approx(0.8)
    assert "`towernet_se-s1` (1/3)" in (tmp_path / "report.md").read_text()


def test_report_keeps_one_model_at_two_budgets_apart(tmp_path):
    from app.study.report import write_report

    for seed in (0, 1):  # the most common budget (3 epochs, 32 px) keeps the plain labels
        fake_run(tmp_path / "a", "towernet", seed, [0.5, 0.6, 0.7])
        fake_run(tmp_path / "a", "towernet_simam", seed, [0.5, 0.6, 0.72])
        fake_run(tmp_path / "b", "towernet", seed, [0.5, 0.6, 0.7, 0.8 + seed / 100], epochs=4)
        fake_run(tmp_path / "c", "towernet", seed, [0.5, 0.6, 0.75], image_size=48)
    summary = write_report([tmp_path / "a", tmp_path / "b", tmp_path / "c"], tmp_path)
    rows = {m["model"]: m for m in summary["models"]}
    assert set(rows) == {"towernet", "towernet_simam", "towernet 4ep", "towernet 48px"}
    assert summary["baseline"] == "towernet" and rows["towernet"]["final_mean"] == pytest.approx(0.7)
    assert rows["towernet 4ep"]["final_mean"] == pytest.approx(0.805)
    assert rows["towernet 48px"]["gmacs"] > rows["towernet"]["gmacs"]
    pairs = {p["model"]: p for p in summary["one_change"]}
    assert pairs["towernet 4ep"]["plain"] == "towernet" and pairs["towernet 4ep"]["change"] == "4ep"
    assert pairs["towernet 4ep"]["diffs_pp"] == pytest.approx([10.0, 11.0])
    assert pairs["towernet 48px"]["diffs_pp"] == pytest.approx([5.0, 5.0])
    # Two budgets equally common: the smaller is the plain one.
    assert [r["model"] for r in mark_budgets(
        [{"model": "m", "epochs": e, "image_size": 8} for e in (6, 3)])] == ["m 6ep", "m"]


def test_runs_of_one_model_under_other_settings_are_never_pooled(tmp_path):
    """Two studies of one model with another learning rate, read as one report: two rows,
    the less common setting tagged and paired as one change; keys that say where a run ran
    or which unit it is (data root, threads, seed) and keys an older config lacks are not
    settings."""
    from app.study.report import write_report

    for seed in (0, 1):
        fake_run(tmp_path / "a", "towernet", seed, [0.5, 0.7], epochs=2,
                 overrides=[("data.root", f"/elsewhere/{seed}"), ("train.threads", seed + 1)])
        fake_run(tmp_path / "b", "towernet", seed, [0.5, 0.6 + seed / 100], epochs=2,
                 overrides=[("optimizer.lr", 0.05)])
    old = tmp_path / "a" / "towernet-s1" / "config.yaml"  # written before the key existed
    old.write_text(old.read_text().replace("  nesterov: false\n", ""))
    summary = write_report([tmp_path / "a", tmp_path / "b"], tmp_path)
    rows = {m["model"]: m for m in summary["models"]}
    assert set(rows) == {"towernet", "towernet optimizer.lr=0.05"}
    assert rows["towernet"]["seeds"] == [0, 1] and rows["towernet"]["final_mean"] == 0.7
    assert rows["towernet optimizer.lr=0.05"]["final_mean"] == pytest.approx(0.605)
    (pair,) = summary["one_change"]
    assert (pair["model"], pair["plain"]) == ("towernet optimizer.lr=0.05", "towernet")


def test_one_change_pairs_fine_tuned_with_scratch_and_bf16_with_fp32():
    def run(model, seed, accs):
        rows = [{"epoch": e, "eval_acc": a} for e, a in enumerate(accs, 1)]
        return {"model": model, "seed": seed, "fold": None, "rows": rows, "predictions": None}

    by_model = {
        "towernet": [run("towernet", 0, [0.5, 0.7, 0.8]), run("towernet", 1, [0.5, 0.6, 0.7])],
        # read in folder order (s1 before s0 here, as s10 before s2): both columns in unit order
        "towernet @pre": [run("towernet @pre", 1, [0.7, 0.75, 0.72]),
                          run("towernet @pre", 0, [0.6, 0.85, 0.9])],
        "towernet_simam": [run("towernet_simam", 0, [0.5, 0.8])],
        "towernet_simam bf16": [run("towernet_simam bf16", 0, [0.4, 0.7])],
        "towernet_se": [run("towernet_se", 0, [0.9])],  # nothing to pair with
    }
    pairs = {p["model"]: p for p in one_change_pairs(by_model, "seeds", baseline="towernet")}
    assert set(pairs) == {"towernet @pre", "towernet_simam bf16"}  # against the baseline: its own section
    pre = pairs["towernet @pre"]
    assert pre["plain"] == "towernet" and pre["change"] == "@pre"
    assert pre["diffs_pp"] == pytest.approx([10.0, 2.0])
    assert pre["epochs_to_plain_final"] == [2, 1]  # 0.85 >= 0.8 at epoch 2; 0.7 >= 0.7 at epoch 1
    bf16 = pairs["towernet_simam bf16"]
    assert bf16["plain"] == "towernet_simam" and bf16["diffs_pp"] == pytest.approx([-10.0])
    assert bf16["epochs_to_plain_final"] == [None] and "too few" in bf16["verdict"]
    text = to_markdown({"baseline": "towernet", "kfold": False, "models": [],
                              "one_change": list(pairs.values())}, [])
    assert "## One change at a time (paired by seed, final top-1)" in text
    assert "| towernet @pre | towernet | +10.0, +2.0 |" in text and "| 2, 1 |" in text
    assert "| towernet_simam bf16 | towernet_simam | -10.0 | — | — | — |" in text


def test_one_change_pairs_an_attention_model_with_its_host_under_the_same_recipe():
    def run(model, seed, final):
        return {"model": model, "seed": seed, "fold": None, "predictions": None,
                "rows": [{"epoch": 1, "eval_acc": final - 0.1}, {"epoch": 2, "eval_acc": final}]}

    labels = {"towernet": (0.80, 0.82), "towernet_simam": (0.81, 0.84),
              "towernet +small_data": (0.85, 0.86), "towernet_simam +small_data": (0.88, 0.87),
              "mobilenet_v2 +small_data": (0.70, 0.72), "mobilenet_v2_ca": (0.60, 0.61)}
    by_model = {label: [run(label, s, acc) for s, acc in enumerate(accs)] for label, accs in labels.items()}
    pairs = {(p["model"], p["plain"]): p for p in one_change_pairs(by_model, "seeds", baseline="towernet")}
    assert set(pairs) == {("towernet +small_data", "towernet"),              # the recipe
                          ("towernet_simam +small_data", "towernet_simam"),
                          ("towernet_simam +small_data", "towernet +small_data")}  # SimAM under it
    simam = pairs[("towernet_simam +small_data", "towernet +small_data")]
    assert simam["change"] == "simam" and simam["diffs_pp"] == pytest.approx([3.0, 1.0])
    # mobilenet_v2_ca has no host run with its tags; towernet_simam vs towernet is the baseline section's


def test_compare_max_units_decides_seeds_added_by_hand_with_the_sequential_looks(tmp_path):
    # Eight seeds of a model 1 point ahead of its host, give or take 0.5, decided once at all
    # eight (the t interval) and as a study that looked after every unit from the 5th up to 12.
    gaps = [1.0, 1.5, 0.5, 1.2, 0.8, 1.4, 0.6, 1.0]
    out = tmp_path / "s"
    for seed, gap in enumerate(gaps):
        for model, final in (("towernet", 0.7), ("towernet_simam", 0.7 + gap / 100)):
            fake_run(out, model, seed, [0.5, 0.6, final])
            (out / f"{model}-s{seed}" / "best.json").write_text(json.dumps({"model": model}))
    run_cli("eval.py", "--compare", out, "--margin", "2", check=True)
    once = json.loads((out / "report.json").read_text())["decisions"][0]
    note = "only the Decisions table's intervals, widened for those looks, decide"
    assert note not in (out / "report.md").read_text()
    proc = run_cli("eval.py", "--compare", out, "--margin", "2", "--max-units", "12", check=True)
    assert "note:" not in proc.stdout  # no plan recorded: nothing changed
    # The console shows the decision, not only the runs table.
    assert "| towernet_simam | towernet | **helps, by less than 2** |" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    looked = report["decisions"][0]
    assert report["decision_rule"]["max_units"] == 12
    text = (out / "report.md").read_text()
    assert "a look after every unit from the 5th to the 12th" in text
    # The sections with the plain intervals say that they do not decide.
    assert note in text and text.index("## Against") < text.index(note)
    # One look: all 8 units, the t quantile; the plan: decided at its first look (5 units),
    # with that look's wider c, the same verdict.
    assert once["units"] == 8 and once["c"] == pytest.approx(2.365, abs=0.01)  # t(7)
    assert looked["units"] == 5 and looked["c"] == pytest.approx(critical_value(5, 12, n=5))
    assert looked["c"] > 3.5 and looked["verdict"] == once["verdict"] == "helps, by less than 2"
    # A study that recorded a plan (--until-decided) read past it: a line says what that costs.
    from app.study.ledger import Ledger

    Ledger(out).start({"margin_pp": 2.0, "min_units": 5, "max_units": 8, "confidence": 0.95})
    proc = run_cli("eval.py", "--compare", out, "--max-units", "12", check=True)
    assert ("note: this study planned its looks to 8 units (study.json); deciding it with looks "
            "to 12 changes that plan") in proc.stdout and "plan_extension.py 8 12" in proc.stdout
    assert "note:" not in run_cli("eval.py", "--compare", out, "--max-units", "8", check=True).stdout
    for bad, message in [(["--max-units", "4"], "at least 5"), (["--max-units", "x"], "invalid int")]:
        proc = run_cli("eval.py", "--compare", out, *bad)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    proc = run_cli("eval.py", "--run", out / "towernet-s0", "--max-units", "8")
    assert proc.returncode == 2 and "--max-units plans the looks of --compare" in proc.stderr


def test_the_compare_table_lists_seeds_in_number_order(tmp_path):
    from app.study.runs import collect_runs
    for seed in (10, 2, 1):
        fake_run(tmp_path, "towernet", seed, [0.5, 0.6, 0.7])
        (tmp_path / f"towernet-s{seed}" / "best.json").write_text(json.dumps({"model": "towernet"}))
    assert [r["run"] for r in collect_runs(tmp_path)] == ["towernet-s1", "towernet-s2", "towernet-s10"]
    fake_run(tmp_path, "towernet", 3, [0.5], epochs=3)  # still training: its epochs say so
    (tmp_path / "towernet-s3" / "best.json").write_text(json.dumps({"model": "towernet"}))
    assert [r["epochs"] for r in collect_runs(tmp_path)] == [3, 3, "1/3", 3]
