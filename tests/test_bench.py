"""bench/throughput.py runs end to end on a tiny configuration and prints valid JSON."""
import importlib.util
import json
import re

import pytest

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
    assert len(row["real_epochs_s"]) == len(row["compute_epochs_s"]) == 2
    assert row["real_epoch_vs_compute"] > 0


def test_bench_table_and_errors():
    proc = run_cli(*TINY[:-1], check=True)
    assert "train img/s" in proc.stdout
    bad = run_cli(*TINY, "-o", "train.nope=1")
    assert bad.returncode == 2 and "train.nope" in bad.stderr


@pytest.mark.parametrize("kind", ["torch", "torch-cl"])
def test_bench_torch_reference_is_optional(kind):
    proc = run_cli(*TINY, "--reference", kind)
    if importlib.util.find_spec("torch") is None:
        assert proc.returncode == 2 and "torch is not importable" in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        rows = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [r["framework"] for r in rows] == ["paddle", kind]
        ours, theirs = rows[0]["train_rounds_img_s"], rows[1]["train_rounds_img_s"]
        assert len(rows[0]["train_vs_torch_rounds"]) == len(ours) == len(theirs)
        for ratio, a, b in zip(rows[0]["train_vs_torch_rounds"], ours, theirs):
            assert ratio == pytest.approx(a / b, rel=0.02)  # img/s ratio = inverse step ratio


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
@pytest.mark.parametrize("model", ["towernet_simam", "resnet50", "mobilenet_v2"])
def test_torch_twins_have_our_models_parameters(model):
    """Same trainable tensors shape for shape, in order (Paddle also lists BN statistics)."""
    from bench.torch_towernet import TWINS
    from models import create_model

    ours = [tuple(p.shape) for p in create_model(model, num_classes=16).parameters() if not p.stop_gradient]
    twin = [tuple(p.shape) for p in TWINS[model](16).parameters()]
    squeeze = [s if len(s) != 2 else s[::-1] for s in ours]  # Linear: [in, out] vs [out, in]
    assert sorted(squeeze) == sorted(twin)


def test_bench_attention_share():
    simam = [*TINY[:2], "towernet_simam", *TINY[3:]]
    row = json.loads(run_cli(*simam, "--attention-share", check=True).stdout)
    # 64 px: SimAM runs on the 4x4 and 2x2 maps (TowerNet skips it on 1x1); a channels-last
    # host hands SimAM its maps as they are (models.attention.attend), timed as it calls it
    assert row["layout"] in ("NCHW", "NHWC")
    if row["layout"] == "NHWC":
        assert row["attention_calls"] == ["SimAM[2, 4, 4, 256] NHWC", "SimAM[2, 2, 2, 256] NHWC"]
    else:
        assert row["attention_calls"] == ["SimAM[2, 256, 4, 4]", "SimAM[2, 256, 2, 2]"]
    assert row["attention_ms"] > 0 and 0 < row["attention_share"] < 1
    none = run_cli(*TINY, "--attention-share")
    assert none.returncode == 2 and "runs no attention module" in none.stderr


def test_kernels_bench_runs():
    proc = run_cli("bench/kernels.py", "--image-size", "64", "--batch-size", "2", "--repeats", "1")
    if proc.returncode == 2:  # no oneDNN in this Paddle build: said in one line
        assert "oneDNN is not available" in proc.stdout
        return
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("Conv2D", "MaxPool2D"))]
    assert rows and "distinct geometries, summed" in proc.stdout


def test_onednn_kernels_bench_names_each_pass_and_compares_libraries(tmp_path):
    from backend import onednn

    if not onednn.available():
        pytest.skip("this Paddle build has no usable libdnnl")
    wheel = onednn._DNNL.lib._name
    proc = run_cli("bench/onednn_kernels.py", "--model", "towernet", "--image-size", "32", "--batch-size", "2",
                   "--library", wheel)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    geometries = [i for i, line in enumerate(out) if " on " in line and "(batch 2)" in line]
    assert len(geometries) > 3
    for i in geometries:  # the wheel's choice, then the other library's: here the same file
        wheel_row, other_row = out[i + 1].split(": ", 1), out[i + 2].split(": ", 1)
        assert wheel_row[0].strip() == "wheel" and wheel_row[1] == other_row[1]
        assert wheel_row[1].count(" | ") == 2  # forward | backward-data | backward-weights
    assert sum("passes by implementation" in line for line in out) == 2
    proc = run_cli("bench/onednn_kernels.py", "--model", "towernet", "--image-size", "32", "--batch-size", "2",
                   "--library", str(tmp_path / "libnothing.so"))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "--library" in errors[0] and "Traceback" not in proc.stderr


def test_onednn_kernels_bench_times_each_bf16_weight_gradient_both_ways():
    from backend import onednn

    if not (onednn.available() and onednn.cpu_bf16_flags()):
        pytest.skip("no oneDNN backend, or a CPU without bfloat16 multiplies")
    proc = run_cli("bench/onednn_kernels.py", "--model", "resnet50", "--image-size", "32", "--batch-size", "2",
                   "-o", "train.amp=bf16", "--time-weights", "1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    rows = out[out.index(next(line for line in out if line.startswith("weight gradients"))) + 1:-1]
    # ResNet-50's 23 convolution geometries, all bf16 channels-last without bias, each timed both
    # ways (even maps: every tap window is one strided block); at batch 2 and 32 px every output
    # is small, so where the CPU lacks a brgemm backward-weights kernel the backend puts every
    # 1x1 and every strided one (the 7x7/2 stem too) on the matmul and keeps the 3x3/1 on the kernel
    assert len(rows) == 23
    step_flops = 0
    for row in rows:
        conv, slash, matmul, choice, rate, calls = row.split(": ")[1].split()
        expected = "conv" if "3x3/1" in row or "amx_bf16" in onednn.cpu_bf16_flags() else "matmul"
        assert slash == "/" and choice == expected and int(calls[1:]) >= 1, row
        # the rate is the chosen pass's 2 x output pixels x Co x Ci x k x k over its time (ms to 2 decimals)
        ci, co, k, stride, h, n = map(int, re.match(r"\s*(\d+)->(\d+) (\d+)x\d+/(\d+) on (\d+)x\d+ \(batch (\d+)\)",
                                                  row).groups())
        flops = 2 * n * (h // stride) ** 2 * co * ci * k * k
        ms = float(conv if choice == "conv" else matmul)
        assert flops / (ms + 0.005) / 1e6 - 0.5 <= int(rate) <= flops / max(ms - 0.005, 1e-9) / 1e6 + 0.5, row
        step_flops += int(calls[1:]) * flops
    assert out[-1].startswith("a step: ") and f"over {step_flops / 1e9:.1f} GFLOP" in out[-1], out[-1]
    proc = run_cli("bench/onednn_kernels.py", "--model", "towernet", "--image-size", "32", "--batch-size", "2",
                   "--time-weights", "1")
    assert proc.returncode == 0 and "no bf16 channels-last convolution" in proc.stdout
    proc = run_cli("bench/onednn_kernels.py", "--time-weights", "-1")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "--time-weights" in errors[0], proc.stderr


def test_kernels_bench_times_the_fused_bn_relu6_layers():
    proc = run_cli("bench/kernels.py", "--bn-relu6", "--image-size", "32", "--batch-size", "2", "--repeats", "1")
    if proc.returncode == 2:  # no oneDNN, or the kernel did not build: said in one line
        assert "not available" in proc.stdout
        return
    assert proc.returncode == 0, proc.stderr
    assert "every layer, summed" in proc.stdout and "[2, 16, 16, 32]" in proc.stdout


def test_ab_switch_bench_toggles_and_reports(capsys):
    from bench import ab_switch

    r = ab_switch.run(ab_switch.argparse.Namespace(model="mobilenet_v2", switch="TOWERNET_FUSED", image_size=32,
                                                   batch_size=2, rounds=2, steps=1, override=[]))
    assert len(r["off_ms"]) == len(r["on_ms"]) == 2 and min(r["off_ms"] + r["on_ms"]) > 0
    assert 0 <= r["rounds_on_faster"] <= 2 and r["off_over_on_median"] > 0
    assert "TOWERNET_FUSED" not in __import__("os").environ  # restored
    proc = run_cli("bench/ab_switch.py", "--rounds", "0")
    assert proc.returncode == 2 and "at least 1" in proc.stderr


def test_inference_bench_runs_every_engine_on_a_tiny_case():
    proc = run_cli("bench/inference.py", "--cases", "towernet_simam:32", "--batch-sizes", "2",
                   "--steps", "1", "--rounds", "1", "--json", check=True)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    engines = {r["engine"] for r in rows}
    assert {"dygraph", "paddle.inference"} <= engines
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("paddle2onnx"):
        assert "onnxruntime" in engines
    assert all(r["img_s"] > 0 and r["max_abs_diff_vs_dygraph"] < 1e-5 for r in rows)


def test_bf16_peak_bench_measures_the_dot_product_or_says_why_not(monkeypatch, capsys):
    import shutil

    from bench import bf16_peak

    proc = run_cli("bench/bf16_peak.py", "--threads", "0")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "--threads" in errors[0], proc.stderr
    if "avx512_bf16" in bf16_peak.cpu_flags() and shutil.which("cc"):
        proc = run_cli("bench/bf16_peak.py", "--threads", "1", "--iterations", "20000")
        assert proc.returncode == 0, proc.stderr
        rate = proc.stdout.splitlines()[-1]
        assert rate.startswith("  1 thread: ") and float(rate.split()[2]) > 0, proc.stdout
    monkeypatch.setattr(bf16_peak, "cpu_flags", lambda: {"avx512f"})
    assert bf16_peak.main(["--threads", "1"]) == 2
    assert "no avx512_bf16" in capsys.readouterr().err
    monkeypatch.setattr(bf16_peak, "cpu_flags", lambda: {"avx512_bf16"})
    monkeypatch.setenv("CC", "no-such-compiler")
    assert bf16_peak.main(["--threads", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no-such-compiler"), err
