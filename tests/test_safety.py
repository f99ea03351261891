"""No code from data: weight files that would run code are refused wherever they are read, and
every file we write (and paddle.vision / PaddleClas-style files) still loads as paddle.load
loads it; run names are folder names; a run killed early keeps one VisualDL record file."""
import json
import os
import pickle
import shutil
import subprocess
import sys
import zlib

import numpy as np
import paddle
import pytest

from app.build.weights import RefusedGlobal, pickle_globals, read_weights, unpickle
from app.config.load import check_name
from app.util.errors import UserError
from conftest import FAST_TRAIN, ROOT, run_cli


class _Call:
    """An object whose pickle calls ``fn(*args)`` when loaded (what an attacker writes)."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def payloads(marker) -> dict:
    """Pickled state dicts that create ``marker`` when unpickled, one per trick."""
    touch = f"open({str(marker)!r}, 'w').close()"
    weights = {"w": np.ones((2, 2), np.float32)}
    return {
        "os.system": pickle.dumps({**weights, "x": _Call(os.system, f"touch {marker}")}),
        "subprocess": pickle.dumps({**weights, "x": _Call(subprocess.call, ["touch", str(marker)])}),
        "builtins.eval": pickle.dumps({**weights, "x": _Call(eval, touch)}),
        "nested": pickle.dumps({**weights, "deep": {"list": [1, (2, _Call(exec, touch))]}}),
        "protocol 2": pickle.dumps({**weights, "x": _Call(os.system, f"touch {marker}")}, protocol=2),
    }


@pytest.mark.parametrize("kind", ["os.system", "subprocess", "builtins.eval", "nested", "protocol 2"])
def test_a_malicious_pickle_is_refused_before_anything_runs(tmp_path, kind):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pdparams"
    path.write_bytes(payloads(marker)[kind])
    with pytest.raises(RefusedGlobal, match=r"evil\.pdparams: refused, not read: it would call"):
        unpickle(path)
    with pytest.raises(RefusedGlobal):
        read_weights(path)
    assert not marker.exists()


def test_the_scan_names_globals_hidden_behind_the_memo_and_the_unpickler_backs_it(tmp_path):
    data = pickle.dumps([_Call(os.system, "true"), _Call(os.system, "true")], protocol=4)
    assert set(pickle_globals(data)) == {("posix", "system")} or \
        set(pickle_globals(data)) == {("nt", "system")}
    # Even a file the scan were fooled by cannot reach a global: the Unpickler refuses it too.
    from app.build import weights

    path = tmp_path / "x.pdparams"
    path.write_bytes(data)
    real = weights.pickle_globals
    weights.pickle_globals = lambda data: []
    try:
        with pytest.raises(pickle.UnpicklingError, match="is not allowed"):
            unpickle(path)
    finally:
        weights.pickle_globals = real


def same(a, b) -> bool:
    """Equal structure, keys, dtypes, values and tensor names (but for the names Paddle
    generates afresh on every load, generated_tensor_<n>)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, paddle.Tensor):
        return (isinstance(b, paddle.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and np.array_equal(a.numpy(), b.numpy())
                and (a.name == b.name or a.name.startswith("generated_tensor_")
                     and b.name.startswith("generated_tensor_")))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b


def test_every_file_we_write_and_vision_and_paddleclas_files_load_as_paddle_load_does(tiny_run, tmp_path):
    runs, _ = tiny_run
    run = runs / "towernet_simam"
    files = [run / n for n in ("best.pdparams", "last.pdparams", "last.pdopt",
                               "last-prev.pdparams", "last-prev.pdopt")]
    from paddle.vision.models import mobilenet_v2

    state = mobilenet_v2(num_classes=10).state_dict()
    vision = tmp_path / "mobilenet_v2.pdparams"
    paddle.save(state, str(vision))
    files.append(vision)
    # PaddleClas / Paddle 2.0-era files: protocol 2 (bytes through _codecs.encode), numpy < 2's
    # module name, the structured-name table, and an optimizer state with an LR scheduler.
    arrays = {k: v.numpy() for k, v in state.items()}
    old = pickle.dumps(arrays, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"_codecs" in old and b"numpy.core.multiarray" in old
    (tmp_path / "paddleclas_p2.pdparams").write_bytes(old)
    files.append(tmp_path / "paddleclas_p2.pdparams")
    table = {**arrays, "StructuredToParameterName@@": {k: f"generated_{i}" for i, k in enumerate(arrays)}}
    (tmp_path / "named.pdparams").write_bytes(pickle.dumps(table, protocol=2))
    files.append(tmp_path / "named.pdparams")
    net = paddle.nn.Linear(3, 2)
    opt = paddle.optimizer.Momentum(parameters=net.parameters(),
                                    learning_rate=paddle.optimizer.lr.CosineAnnealingDecay(0.1, 10))
    net(paddle.ones([1, 3])).sum().backward()
    opt.step()
    paddle.save(opt.state_dict(), str(tmp_path / "opt.pdopt"))
    files.append(tmp_path / "opt.pdopt")
    for path in files:
        assert same(paddle.load(str(path)), read_weights(path)), path


def _tamper(path, payload: bytes) -> dict:
    """Replace ``path`` with ``payload``; the size and CRC-32 an attacker would record."""
    path.write_bytes(payload)
    return {"size": len(payload), "crc32": f"{zlib.crc32(payload):08x}"}


def test_pretrained_resume_and_eval_refuse_a_crafted_file_in_one_line(tiny_run, tiny_split, tmp_path):
    runs, _ = tiny_run
    marker = tmp_path / "PWNED"
    evil = payloads(marker)

    path = tmp_path / "evil.pdparams"
    path.write_bytes(evil["os.system"])
    proc = run_cli("train.py", "--model", "towernet", "--data", tiny_split, "--pretrained", path,
                   "--output", tmp_path / "out", *FAST_TRAIN)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "refused, not read" in proc.stderr and "posix.system" in proc.stderr

    for name in ("last.pdparams", "last.pdopt"):  # a shared run folder, CRC-32 updated
        run = tmp_path / name / "towernet_simam"
        shutil.copytree(runs / "towernet_simam", run)
        state = json.loads((run / "state.json").read_text())
        state.update(status="interrupted", epoch=1)
        state["checkpoint"] = {**state["checkpoint"], "epoch": 1,
                               name.split(".")[1]: _tamper(run / name, evil["subprocess"])}
        (run / "state.json").write_text(json.dumps(state))
        proc = run_cli("train.py", "--resume", run)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert f"{name}: refused, not read: it would call subprocess.call" in proc.stderr

    run = tmp_path / "eval" / "towernet_simam"
    shutil.copytree(runs / "towernet_simam", run)
    best = json.loads((run / "best.json").read_text())
    best["weights_crc32"] = _tamper(run / "best.pdparams", evil["builtins.eval"])["crc32"]
    (run / "best.json").write_text(json.dumps(best))
    for args in (["--run", run], ["--run", run, "--export", tmp_path / "deploy"],
                 ["--run", run, "--attention-maps", "2"], ["--gradcam", "2", "--runs", run]):
        proc = run_cli("eval.py", *args)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
        assert "best.pdparams: refused, not read: it would call builtins.eval" in proc.stderr
    assert not marker.exists() and not (tmp_path / "deploy").exists()


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "..", ".hidden", "a\\b", "x..y"])
def test_run_names_are_folder_names(name):
    with pytest.raises(UserError, match="must be a folder name"):
        check_name(name)


def test_a_name_with_a_path_creates_nothing_outside_output(tiny_split, tmp_path):
    out = tmp_path / "a" / "b" / "runs"
    for name in ("../../escaped", "sub/run", ".hidden"):
        proc = run_cli("train.py", "--model", "towernet", "--data", tiny_split, "--output", out,
                       "--name", name, *FAST_TRAIN)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "folder name" in proc.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == []


def test_a_study_pretrained_from_a_parent_folder_gets_its_run_folders_name(tmp_path):
    from app.config.load import load_config
    from app.study.runs import study_run_name

    (tmp_path / "pretrain").mkdir()
    cwd = os.getcwd()
    os.chdir(tmp_path / "pretrain")
    try:
        cfg = load_config(model="towernet", overrides=[("model.pretrained", "../pretrain/best.pdparams")])
        assert study_run_name("towernet", 0, cfg) == "towernet@pretrain-s0"
        cfg["model"]["pretrained"] = "../best.pdparams"
        assert study_run_name("towernet", 0, cfg) == f"towernet@{tmp_path.name}-s0"
    finally:
        os.chdir(cwd)


KILL_AT_STATE_OF_EPOCH_1 = r"""
import json, os, runpy, signal, sys
sys.argv = sys.argv[1:]
sys.path.insert(0, os.getcwd())
import app
real = os.replace
def replace(src, dst, *a, **k):
    if str(dst).endswith("state.json") and json.load(open(src)).get("epoch") == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # after epoch 1's metrics and records, before its state
    return real(src, dst, *a, **k)
os.replace = replace
runpy.run_path("train.py", run_name="__main__")
"""


def test_a_run_killed_after_its_first_epoch_keeps_one_record_file(tiny_split, tmp_path):
    from visualdl import LogReader

    from app.run.folder import RunFolder

    args = ["train.py", "--model", "towernet", "--data", str(tiny_split), "--epochs", "2",
            "--output", str(tmp_path), *map(str, FAST_TRAIN)]
    proc = subprocess.run([sys.executable, "-c", KILL_AT_STATE_OF_EPOCH_1, *args], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    run = RunFolder(tmp_path / "towernet")
    assert run.read_state()["epoch"] == 0 and len(run.record_files()) == 1
    run_cli("train.py", "--resume", run.path, check=True)
    (records,) = run.record_files()  # the file from before the kill is gone, not shadowed
    reader = LogReader(file_path=str(records))
    for tag in reader.get_tags()["scalar"]:
        steps = [r.id for r in reader.get_data("scalar", tag)]
        assert len(steps) == len(set(steps)), tag
    assert [r.id for r in reader.get_data("scalar", "eval/top1")] == [1, 2]
    assert [r.id for r in reader.get_data("scalar", "train/loss")][0] == 0


def test_a_checkpoint_from_before_structured_names_resumes_through_the_safe_loader(tiny_split, tmp_path):
    """last.pdopt written keyed by Paddle's generated names (as runs before structured keys
    wrote it) resumes through hapi's loading, its files read by the checked unpickler, to the
    weights of the uninterrupted run."""
    from app.build.network import build_network
    from app.config.load import load_config
    from app.run import checkpoint
    from app.run.folder import RunFolder
    from app.train import trainer
    from conftest import train_cut_in_epoch_2

    def cfg(out):
        return load_config(model="towernet", overrides=[
            ("data.root", str(tiny_split)), ("output.dir", str(out)), ("train.epochs", 3),
            ("data.image_size", 32), ("train.batch_size", 12), ("data.cache", False),
            ("data.rotation", 0), ("data.hflip", False)])

    full = trainer.train(cfg(tmp_path / "full"))
    run = RunFolder(tmp_path / "cut" / "towernet")
    train_cut_in_epoch_2(cfg(tmp_path / "cut"), run.path)
    with paddle.utils.unique_name.guard():  # the names a resuming process generates
        net = build_network("towernet", 4)
        model = trainer.build_model(cfg(tmp_path), net, 4, 3)
        to_generated = {v: k for k, v in checkpoint._accumulator_names(net, model._optimizer).items()}
    state = run.read_state()
    prefix = "last"
    opt = paddle.load(str(run.path / f"{prefix}.pdopt"))
    assert opt.pop(checkpoint.STRUCTURED) == "structured"
    paddle.save({to_generated.get(k, k): v for k, v in opt.items()}, str(run.path / f"{prefix}.pdopt"))
    data = (run.path / f"{prefix}.pdopt").read_bytes()
    state["checkpoint"]["pdopt"] = {"size": len(data), "crc32": f"{zlib.crc32(data):08x}"}
    run.write_state(state)
    assert any(k.startswith("conv2d_") for k in paddle.load(str(run.path / "last.pdopt")))

    trainer.train(run.read_config(), run.path)
    a, b = paddle.load(str(full / "last.pdparams")), paddle.load(str(run.last_weights))
    for k in a:
        np.testing.assert_allclose(b[k].numpy(), a[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
