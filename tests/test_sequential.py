"""``train.py --until-decided``: a study that stops when decided, at its unit limit or its budget,
resumes after Ctrl-C, and shares its units between processes; ``--margin`` on any study."""
import json
import os
import subprocess
import sys

from conftest import ROOT, run_cli

TINY = ["--image-size", "32", "--batch-size", "12", "--epochs", "1", "-o", "data.cache=false",
        "-o", "log.images=false"]
MODELS = ["--models", "towernet,towernet_simam"]


def study(tiny_split, out, *extra, check=True):
    return run_cli("train.py", *MODELS, "--until-decided", "--data", tiny_split, "--output", out,
                   *TINY, *extra, check=check)


def runs_of(out) -> list:
    return sorted(p.name for p in out.iterdir() if (p / "config.yaml").is_file())


def test_stops_at_max_units_then_resumes_until_decided(tiny_split, tmp_path):
    out = tmp_path / "study"
    proc = study(tiny_split, out, "--max-units", "2")
    assert "stopped: max units (2)" in proc.stdout
    assert runs_of(out) == ["towernet-s0", "towernet-s1", "towernet_simam-s0", "towernet_simam-s1"]
    report = json.loads((out / "report.json").read_text())
    (decision,) = report["decisions"]
    assert decision["verdict"] == "undecided" and decision["units"] == 2
    assert "| towernet_simam | towernet | undecided: needs 5 units |" in (out / "report.md").read_text()

    # The same study, asked again with a margin any interval meets: it trains units 3-5 and
    # stops at the first look, never starting a 6th unit.
    proc = study(tiny_split, out, "--max-units", "8", "--margin", "1000")
    assert "stopped: decided" in proc.stdout and "unit 2: finished earlier" in proc.stdout
    assert "note:" not in proc.stdout  # the 2-unit plan had no look: nothing was seen
    assert len(runs_of(out)) == 10 and "towernet-s5" not in runs_of(out)
    (decision,) = json.loads((out / "report.json").read_text())["decisions"]
    assert decision["decided"] and decision["units"] == 5
    assert decision["verdict"] == "equivalent within ±1000"
    ledger = json.loads((out / "study.json").read_text())
    assert ledger["plan"]["max_units"] == 8 and ledger["plan"]["margin_pp"] == 1000
    assert sorted(ledger["units"]) == ["0", "1", "2", "3", "4"]
    assert ledger["spent_seconds"] == sum(u["seconds"] for u in ledger["units"].values()) > 0
    table = [line for line in proc.stdout.splitlines() if line.startswith("| towernet_simam |")]
    assert len(table) == 1 and "equivalent within ±1000" in table[0]

    # --margin on the finished study folder decides again without training.
    proc = run_cli("eval.py", "--compare", out, "--margin", "0.5", check=True)
    report = json.loads((out / "report.json").read_text())
    assert report["decision_rule"]["margin_pp"] == 0.5
    assert "decision (D = 0.5 points)" in (out / "report.md").read_text()
    assert report["decision_rule"]["max_units"] == 8  # the study's own looks
    bad = run_cli("eval.py", "--compare", out, "--margin", "-2")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--margin" in bad.stderr


def test_stops_before_a_unit_that_would_pass_the_budget(tiny_split, tmp_path):
    out = tmp_path / "study"
    proc = study(tiny_split, out, "--max-units", "6", "--budget", "0.05s")
    assert "stopped: budget" in proc.stdout, proc.stdout
    assert runs_of(out) == ["towernet-s0", "towernet_simam-s0"]  # the first unit: no estimate yet
    ledger = json.loads((out / "study.json").read_text())
    assert ledger["plan"]["budget_seconds"] == 0.05
    assert ledger["spent_seconds"] > 0.05  # one unit takes longer than the whole budget
    proc = study(tiny_split, out, "--max-units", "6", "--budget", "0.05s")  # over budget already
    assert "stopped: budget" in proc.stdout and len(runs_of(out)) == 2


INTERRUPT_IN_UNIT_2 = r"""
import os, runpy, signal, sys
from pathlib import Path
sys.argv = sys.argv[1:]
sys.path.insert(0, os.getcwd())
import app
from app.build.loss import ClassificationLoss
signal.signal(signal.SIGINT, signal.default_int_handler)
marker, forward = Path(os.environ["CUT_MARKER"]), ClassificationLoss.forward
def forward_then_interrupt(self, *args, **kwargs):
    if marker.is_dir():  # unit 2's first run exists
        os.kill(os.getpid(), signal.SIGINT)
    return forward(self, *args, **kwargs)
ClassificationLoss.forward = forward_then_interrupt
runpy.run_path("train.py", run_name="__main__")
"""


def test_ctrl_c_mid_study_then_the_same_command_resumes(tiny_split, tmp_path):
    out = tmp_path / "study"
    args = ["train.py", *MODELS, "--until-decided", "--data", tiny_split, "--output", out,
            *TINY, "--max-units", "3"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUT_MARKER": str(out / "towernet-s1")}
    proc = subprocess.run([sys.executable, "-c", INTERRUPT_IN_UNIT_2, *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 130, proc.stderr
    assert "re-run" in proc.stderr or "--resume" in proc.stderr
    spent = json.loads((out / "study.json").read_text())["spent_seconds"]
    assert spent > 0
    proc = run_cli(*args, check=True)
    assert "stopped: max units (3)" in proc.stdout
    assert runs_of(out) == [f"{m}-s{s}" for m in ("towernet", "towernet_simam") for s in (0, 1, 2)]
    for name in runs_of(out):
        state = json.loads((out / name / "state.json").read_text())
        assert state["status"] == "finished" and state["epoch"] == 1
    assert json.loads((out / "study.json").read_text())["spent_seconds"] > spent


def test_two_processes_share_one_study_as_two_machines_would(tiny_split, tmp_path):
    out = tmp_path / "study"
    cmd = [sys.executable, "train.py", *MODELS, "--until-decided", "--data", str(tiny_split),
           "--output", str(out), *TINY, "--max-units", "3"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outputs]
    # every run of the 3 units exactly once (no name-2 folders), each trained by one process
    assert runs_of(out) == [f"{m}-s{s}" for m in ("towernet", "towernet_simam") for s in (0, 1, 2)]
    trained = sum(o[0].count("finished, final eval") + o[0].count("epoch 1/1") for o in outputs)
    assert trained == 6, [o[0] for o in outputs]
    assert all("stopped: max units (3)" in o[0] for o in outputs)
    ledger = json.loads((out / "study.json").read_text())
    assert ledger["spent_seconds"] > 0 and set(ledger["units"]) <= {"0", "1", "2"}


def test_until_decided_refuses_what_it_cannot_honour(tiny_split, tmp_path):
    for extra, message in [(["--seeds", "0,1"], "drop --seeds"),
                           (["--margin", "x"], "--margin"),
                           (["--budget", "soon"], "--budget"),
                           (["--max-units", "0"], "--max-units")]:
        proc = study(tiny_split, tmp_path / "s", *extra, check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert proc.stderr.strip().count("\n") == 0 and not (tmp_path / "s").exists()
    proc = run_cli("train.py", "--model", "towernet", "--max-units", "3", "--data", tiny_split)
    assert proc.returncode == 2 and "--until-decided" in proc.stderr


def test_versus_trains_each_model_with_and_without_the_change_and_waits_for_it(tiny_split,
                                                                                tmp_path):
    out = tmp_path / "study"
    proc = run_cli("train.py", "--models", "towernet", "--versus", "recipe=small_data",
                   "--until-decided", "--max-units", "2", "--data", tiny_split,
                   "--output", out, *TINY, check=True)
    assert runs_of(out) == ["towernet+small_data-s0", "towernet+small_data-s1",
                            "towernet-s0", "towernet-s1"]
    assert "stopped: max units (2)" in proc.stdout
    (decision,) = json.loads((out / "report.json").read_text())["decisions"]
    assert (decision["model"], decision["against"], decision["kind"]) == \
        ("towernet +small_data", "towernet", "setting")
    ledger = json.loads((out / "study.json").read_text())
    assert ledger["plan"]["versus"] == {"overrides": [], "recipe": "small_data"}

    # The change is waited for as an attention module is: a margin any interval meets
    # decides it at the first look (5 units), and the study stops there.
    proc = study(tiny_split, out, "--max-units", "8", "--margin", "1000", "--versus",
                 "recipe=small_data")
    assert "stopped: decided" in proc.stdout
    decisions = {(d["model"], d["against"]): d
                 for d in json.loads((out / "report.json").read_text())["decisions"]}
    waited = [("towernet_simam", "towernet"), ("towernet +small_data", "towernet"),
              ("towernet_simam +small_data", "towernet_simam"),
              ("towernet_simam +small_data", "towernet +small_data")]
    assert all(decisions[pair]["decided"] and decisions[pair]["units"] == 5 for pair in waited)
    assert "towernet_simam+small_data-s4" in runs_of(out) and "towernet-s5" not in runs_of(out)


def test_versus_decides_any_setting_naming_the_changed_runs(tiny_split, tmp_path):
    out = tmp_path / "study"
    proc = run_cli("train.py", "--models", "towernet,towernet_simam", "--versus", "optimizer.lr=0.05",
                   "--seeds", "0,1", "--data", tiny_split, "--output", out, *TINY, check=True)
    assert runs_of(out) == ["towernet-optimizer.lr=0.05-s0", "towernet-optimizer.lr=0.05-s1",
                            "towernet-s0", "towernet-s1",
                            "towernet_simam-optimizer.lr=0.05-s0", "towernet_simam-optimizer.lr=0.05-s1",
                            "towernet_simam-s0", "towernet_simam-s1"]
    report = json.loads((out / "report.json").read_text())
    pairs = {(p["model"], p["plain"]): p for p in report["one_change"]}
    # the changed runs are the marked side, whatever the values' order (0.05 > the default 0.01)
    assert ("towernet optimizer.lr=0.05", "towernet") in pairs
    assert ("towernet_simam optimizer.lr=0.05", "towernet_simam") in pairs
    assert pairs[("towernet optimizer.lr=0.05", "towernet")]["units"] == [[0, None], [1, None]]
    assert "changes nothing" not in proc.stderr
    # a smaller value than the default is marked too, not the unchanged runs
    out = tmp_path / "lower"
    run_cli("train.py", "--models", "towernet", "--versus", "optimizer.lr=0.001", "--seeds", "0",
            "--data", tiny_split, "--output", out, *TINY, check=True)
    (pair,) = json.loads((out / "report.json").read_text())["one_change"]
    assert (pair["model"], pair["plain"]) == ("towernet optimizer.lr=0.001", "towernet")


def test_versus_refuses_a_change_that_changes_nothing(tiny_split, tmp_path):
    for change in ("optimizer.lr=0.01", "train.amp=off", "train.threads=1", "recipe", "no-equals",
                   "lr=0.1", "train.change=x"):
        proc = run_cli("train.py", "--models", "towernet", "--versus", change, "--seeds", "0",
                       "--data", tiny_split, "--output", tmp_path / "s", *TINY)
        assert proc.returncode == 2, (change, proc.stderr)
        assert proc.stderr.strip().count("\n") == 0 and "--versus" in proc.stderr
    # every model is checked, not the first only: towernet's L2 decay is 2e-4 already
    proc = run_cli("train.py", "--models", "mobilenet_v2,towernet", "--versus", "optimizer.weight_decay=0.0002",
                   "--seeds", "0", "--data", tiny_split, "--output", tmp_path / "s", *TINY)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "towernet's config is the same" in proc.stderr
    # starting weights a run could not load are refused before the first run trains
    for change in ("pretrained=imagenet", f"pretrained={tmp_path / 'missing.pdparams'}"):
        proc = run_cli("train.py", "--models", "towernet", "--versus", change, "--seeds", "0",
                       "--data", tiny_split, "--output", tmp_path / "s", *TINY)
        assert proc.returncode == 2 and "--pretrained" in proc.stderr, proc.stderr
    assert not (tmp_path / "s").exists()


def test_harmless_also_stops_on_a_ruled_out_loss_of_the_change_only():
    from app.study.sequential import answered
    attention = {"kind": "attention", "decided": True, "interval_pp": [-3.0, 1.0]}
    open_change = {"kind": "setting", "decided": False, "interval_pp": [-0.8, 1.6]}
    lossy_change = {"kind": "setting", "decided": False, "interval_pp": [-1.2, 1.6]}
    assert answered([attention, open_change], 1.0) == "decided"  # settings not waited for
    assert answered([attention, open_change], 1.0, versus=True) is None
    assert answered([attention, open_change], 1.0, versus=True, harmless=True) == \
        "decided, or a loss of 1 point ruled out"
    assert answered([attention, lossy_change], 1.0, versus=True, harmless=True) is None
    open_attention = dict(attention, decided=False, interval_pp=[-0.5, 2.0])
    assert answered([open_attention, open_change], 1.0, versus=True, harmless=True) is None
    assert answered([], 1.0, versus=True, harmless=True) is None
    assert answered([dict(open_change, interval_pp=None)], 1.0, True, True) is None


def test_harmless_needs_a_versus_study_run_until_decided(tiny_split, tmp_path):
    proc = run_cli("train.py", "--models", "towernet", "--until-decided", "--harmless",
                   "--data", tiny_split, "--output", tmp_path / "s", *TINY)
    assert proc.returncode == 2 and "--harmless" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and not (tmp_path / "s").exists()
