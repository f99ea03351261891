"""bench/throughput.py runs end to end on a tiny configuration and prints valid JSON."""
import importlib.util
import json

from tests.conftest import run_cli

TINY = ["bench/throughput.py", "--model", "towernet", "--image-size", "64", "--batch-size", "2",
        "--steps", "1", "--rounds", "1", "--json"]


def test_bench_json_with_loader(tiny_split):
    proc = run_cli(*TINY, "--data", tiny_split, "-o", "data.cache=false", check=True)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert len(rows) == 1
    row = rows[0]
    assert row["framework"] == "paddle"
    assert row["train_img_s"] > 0 and row["infer_img_s"] > 0
    assert row["loader_images"] == 36 and row["loader_epoch_s"] > 0


def test_bench_table_and_errors():
    proc = run_cli(*TINY[:-1], check=True)
    assert "train img/s" in proc.stdout
    bad = run_cli(*TINY, "-o", "train.nope=1")
    assert bad.returncode == 2 and "train.nope" in bad.stderr


def test_bench_torch_reference_is_optional():
    proc = run_cli(*TINY, "--reference", "torch")
    if importlib.util.find_spec("torch") is None:
        assert proc.returncode == 2 and "torch is not importable" in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        frameworks = [json.loads(line)["framework"] for line in proc.stdout.splitlines()]
        assert frameworks == ["paddle", "torch"]
