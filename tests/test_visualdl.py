"""The real VisualDL server shows our runs and scalar tags (started on 127.0.0.1)."""
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from app.run.folder import RunFolder
from conftest import train_cut_in_epoch_2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())["data"]


def serve(logdir):
    port = free_port()
    visualdl = Path(sys.executable).with_name("visualdl")
    cmd = [str(visualdl)] if visualdl.exists() else [sys.executable, "-m", "visualdl"]
    server = subprocess.Popen(cmd + ["--logdir", str(logdir), "--host", "127.0.0.1",
                                     "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/app/api"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            get_json(f"{base}/runs")
            return server, base
        except OSError:
            if server.poll() is not None:
                pytest.fail("visualdl exited early")
            time.sleep(0.5)
    server.terminate()
    pytest.fail("visualdl did not answer within 60 s")


def test_visualdl_dashboard_lists_runs_and_tags(tiny_run):
    runs, _ = tiny_run
    server, base = serve(runs)
    try:
        names = get_json(f"{base}/runs")
        assert names and any(n.endswith("towernet_simam") for n in names), names
        tags = get_json(f"{base}/scalar/tags")
        ours = dict(zip(tags["runs"], tags["tags"]))
        run_tags = next(t for r, t in ours.items() if r.endswith("towernet_simam"))
        for tag in ("train/loss", "eval/loss", "eval/top1", "eval/top5", "lr"):
            assert tag in run_tags, run_tags
    finally:
        server.terminate()
        server.wait(timeout=20)


@pytest.fixture(scope="module")
def dashboard_runs(tiny_split, tmp_path_factory):
    """Two runs (towernet_se, towernet_simam; 3 epochs, attention maps every 2) in one
    folder; towernet_simam is interrupted in epoch 2 and resumed."""
    from app.config.load import load_config
    from app.train import trainer

    runs = tmp_path_factory.mktemp("dash")

    def cfg(model):
        return load_config(model=model, overrides=[
            ("data.root", str(tiny_split)), ("output.dir", str(runs)), ("train.epochs", 3),
            ("data.image_size", 64), ("train.batch_size", 12), ("data.cache", False),
            ("log.attention_every", 2)])

    trainer.train(cfg("towernet_se"))
    train_cut_in_epoch_2(cfg("towernet_simam"), runs / "towernet_simam")
    trainer.train(RunFolder(runs / "towernet_simam").read_config(), runs / "towernet_simam")
    return runs


def test_hparams_tab_lists_every_run_once_with_values_and_metrics(dashboard_runs):
    from visualdl import LogReader

    for run in ("towernet_se", "towernet_simam"):
        records = 0
        for f in (dashboard_runs / run).glob("vdlrecords*"):
            records += len(LogReader(file_path=str(f)).get_tags().get("hyper_parameters", []))
        assert records == 1, (run, records)  # the resumed run wrote no second record
    server, base = serve(dashboard_runs)
    try:
        indicators = get_json(f"{base}/hparams/indicators")
        names = {h["name"] for h in indicators["hparams"]}
        assert {"model", "host", "attention", "recipe", "seed", "lr", "epochs", "batch_size",
                "image_size", "weight_decay", "nesterov", "no_decay_norm_bias", "sam_rho", "pretrained"} <= names
        assert {m["name"] for m in indicators["metrics"]} >= {"hparam/best_top1", "eval/top1",
                                                              "eval/loss", "hparam/params"}
        listed = {Path(r["name"]).name: r for r in get_json(f"{base}/hparams/list")}
        assert set(listed) == {"towernet_se", "towernet_simam"}
        for name, record in listed.items():
            rows = RunFolder(dashboard_runs / name).read_metrics()
            assert record["hparams"]["model"] == name and record["hparams"]["host"] == "towernet"
            assert record["metrics"]["eval/top1"] == pytest.approx(rows[-1]["eval_acc"], abs=1e-5)
            assert record["metrics"]["hparam/best_top1"] == pytest.approx(
                max(r["eval_acc"] for r in rows), abs=1e-5)
        assert listed["towernet_simam"]["hparams"]["attention"] == "simam"
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_images_tab_serves_confusion_samples_and_attention_maps(dashboard_runs):
    server, base = serve(dashboard_runs)
    try:
        tags = get_json(f"{base}/image/tags")
        ours = {Path(r).name: (r, t) for r, t in zip(tags["runs"], tags["tags"])}
        run, run_tags = ours["towernet_se"]
        assert {"train/samples", "eval/confusion_matrix_best", "eval/attention_maps"} <= set(run_tags)
        steps = get_json(f"{base}/image/list?run={run}&tag=eval/attention_maps")
        assert [s["step"] for s in steps] == [2, 3]  # every 2 epochs and the last
        with urllib.request.urlopen(f"{base}/image/image?run={run}&tag=train/samples&index=0",
                                    timeout=5) as r:
            png = r.read()
        import io

        from PIL import Image

        image = Image.open(io.BytesIO(png))
        assert image.format == "PNG" and image.size == (4 * 66 + 2, 4 * 66 + 2)  # 4x4 of 64 px
        resumed, resumed_tags = ours["towernet_simam"]
        samples = get_json(f"{base}/image/list?run={resumed}&tag=train/samples")
        assert len(samples) == 1  # logged once, not again on resume
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_a_resumed_run_keeps_one_record_file_with_every_step_once(dashboard_runs):
    # VisualDL shows only the newest record file of a run folder: the resumed run's file
    # must hold the epochs before the resume too, and the interrupted epoch's points once.
    from visualdl import LogReader

    files = list((dashboard_runs / "towernet_simam").glob("vdlrecords*"))
    assert len(files) == 1
    reader = LogReader(file_path=str(files[0]))
    assert [r.id for r in reader.get_data("scalar", "eval/top1")] == [1, 2, 3]
    steps = [r.id for r in reader.get_data("scalar", "train/loss")]
    assert len(steps) == len(set(steps)) and steps == sorted(steps)
    assert steps[0] == 0 and steps[-1] >= 6  # 3 steps per epoch (36 images / batch 12)
    rows = RunFolder(dashboard_runs / "towernet_simam").read_metrics()
    values = [r.value for r in reader.get_data("scalar", "eval/top1")]
    assert values == pytest.approx([r["eval_acc"] for r in rows], abs=1e-5)
