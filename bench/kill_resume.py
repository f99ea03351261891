"""kill -9 a tiny training run at seeded moments, resume it each time, and check the result.

    python bench/kill_resume.py --data SPLIT [--points 24] [--seed 0] [--epochs 4] [--json]

Each kill point is either a *file-operation kill* -- the run sends itself SIGKILL just before
its k-th rename of a run file (k drawn with the seed), i.e. inside a checkpoint, best-model,
state.json or metrics.csv write -- or a *timed kill* (SIGKILL after a seeded delay: inside
a training step, an eval, or a save). After every kill the run is resumed (``--resume``,
killed again until the points are used up), then finished. It then checks what a user relies on:

- every epoch exactly once in metrics.csv, with the lr column of an uninterrupted run;
- one VisualDL record file in the run folder (any reader of the folder sees each step once),
  every scalar step in it at most once and every epoch there;
- best.json describes best.pdparams (its CRC-32) and the best epoch of metrics.csv;
- no temporary files left behind.

Prints one line per kill point and a summary (``--json``: one JSON object).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Runs train.py in a child that SIGKILLs itself before its K-th os.replace (KILL_AT_REPLACE).
CHILD = r"""
import os, runpy, signal, sys
k = int(os.environ.get("KILL_AT_REPLACE", "0"))
if k:
    real, count = os.replace, [0]
    def replace(*args, **kwargs):
        count[0] += 1
        if count[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    os.replace = replace
sys.argv = ["train.py"] + sys.argv[1:]
runpy.run_path("train.py", run_name="__main__")
"""


def train_cmd(*args) -> list:
    return [sys.executable, "-c", CHILD, *map(str, args)]


def run(cmd, env=None, kill_after: float | None = None, errors: list | None = None) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=600)
    if errors is not None:
        errors.append(stderr.strip().splitlines()[-1] if stderr.strip() else "")
    return proc.returncode


def check(run_dir: Path, reference_rows: list, epochs: int) -> list:
    """Problems found in a finished run (empty: all good)."""
    from visualdl import LogReader

    from app.run.checkpoint import crc32
    from app.run.folder import RunFolder

    problems = []
    rows = RunFolder(run_dir).read_metrics()
    if [r["epoch"] for r in rows] != list(range(1, epochs + 1)):
        problems.append(f"metrics.csv epochs {[r['epoch'] for r in rows]}")
    elif any(abs(a["lr"] - b["lr"]) > 1e-9 for a, b in zip(rows, reference_rows)):
        problems.append("lr column differs from the uninterrupted run")
    files = RunFolder(run_dir).record_files()
    if len(files) != 1:  # any reader of the folder (not only VisualDL, which shows the newest)
        problems.append(f"{len(files)} VisualDL record files: {[p.name for p in files]}")
    reader = LogReader(file_path=str(files[-1]))  # the one VisualDL shows
    for tag in reader.get_tags().get("scalar", []):
        steps = [r.id for r in reader.get_data("scalar", tag)]
        if len(steps) != len(set(steps)):
            problems.append(f"VisualDL {tag}: repeated steps")
    if [r.id for r in reader.get_data("scalar", "eval/top1")] != list(range(1, epochs + 1)):
        problems.append("VisualDL eval/top1 does not hold every epoch once")
    best = json.loads((run_dir / "best.json").read_text())
    if best.get("weights_crc32") != crc32(run_dir / "best.pdparams"):
        problems.append("best.json does not describe best.pdparams")
    if rows and best["epoch"] != max(rows, key=lambda r: r["eval_acc"])["epoch"]:
        # ties: the first best epoch is kept
        top = max(r["eval_acc"] for r in rows)
        if abs(best["eval_acc"] - top) > 1e-6:
            problems.append(f"best.json epoch {best['epoch']} is not the best epoch")
    leftovers = [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    if leftovers:
        problems.append(f"temporary files left: {leftovers}")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a split folder (small: the run restarts often)")
    p.add_argument("--points", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    common = ["--model", "towernet", "--data", args.data, "--epochs", args.epochs,
              "--image-size", "32", "--batch-size", "12", "-o", "data.cache=false"]
    work = Path(tempfile.mkdtemp(prefix="killtest-"))
    try:
        if run(train_cmd(*common, "--output", work / "reference")) != 0:
            raise SystemExit("the uninterrupted reference run failed")
        from app.run.folder import RunFolder

        reference = RunFolder(work / "reference" / "towernet").read_metrics()
        t0 = time.perf_counter()
        run(train_cmd(*common, "--output", work / "timing"))
        duration = time.perf_counter() - t0
        results = []
        for point in range(args.points):
            out = work / f"p{point}"
            kinds = []
            for _ in range(3):  # up to three kills in one run, then let it finish
                resume = (out / "towernet" / "state.json").is_file()
                cmd = train_cmd("--resume", out / "towernet") if resume else \
                    train_cmd(*common, "--output", out)
                if rng.random() < 0.5:
                    k = rng.randint(1, 4 * args.epochs + 4)
                    code = run(cmd, env={"KILL_AT_REPLACE": str(k)})
                    kinds.append(f"rename#{k}")
                else:
                    delay = rng.uniform(0.5, duration)
                    code = run(cmd, kill_after=delay)
                    kinds.append(f"t={delay:.1f}s")
                if code == 0:
                    kinds[-1] += "(finished first)"
                    break
            errors = []
            if (out / "towernet" / "state.json").is_file():
                code = run(train_cmd("--resume", out / "towernet"), errors=errors)
            else:  # killed before the run folder existed: start it again
                code = run(train_cmd(*common, "--output", out), errors=errors)
            problems = (check(out / "towernet", reference, args.epochs) if code == 0
                        else [f"final resume exited {code}: {errors[-1]}"])
            results.append({"point": point, "kills": kinds, "ok": not problems,
                            "problems": problems})
            if not args.json:
                print(f"point {point:2d}: kills {', '.join(kinds):<48} "
                      f"{'ok' if not problems else '; '.join(problems)}", flush=True)
        summary = {"points": len(results), "kills": sum(len(r["kills"]) for r in results),
                   "clean": sum(r["ok"] for r in results), "results": results}
        if args.json:
            print(json.dumps(summary))
        else:
            print(f"{summary['clean']}/{summary['points']} kill points resumed cleanly "
                  f"({summary['kills']} kills in all)")
        return 0 if summary["clean"] == summary["points"] else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
