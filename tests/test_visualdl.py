"""The real VisualDL server shows our runs and scalar tags (started on 127.0.0.1)."""
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())["data"]


def test_visualdl_dashboard_lists_runs_and_tags(tiny_run):
    runs, _ = tiny_run
    port = free_port()
    visualdl = Path(sys.executable).with_name("visualdl")
    cmd = [str(visualdl)] if visualdl.exists() else [sys.executable, "-m", "visualdl"]
    server = subprocess.Popen(cmd + ["--logdir", str(runs), "--host", "127.0.0.1",
                                     "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/app/api"
    try:
        deadline, names = time.time() + 60, None
        while time.time() < deadline:
            try:
                names = get_json(f"{base}/runs")
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail("visualdl exited early")
                time.sleep(0.5)
        assert names and any(n.endswith("towernet_simam") for n in names), names
        tags = get_json(f"{base}/scalar/tags")
        ours = dict(zip(tags["runs"], tags["tags"]))
        run_tags = next(t for r, t in ours.items() if r.endswith("towernet_simam"))
        for tag in ("train/loss", "eval/loss", "eval/top1", "eval/top5", "lr"):
            assert tag in run_tags, run_tags
    finally:
        server.terminate()
        server.wait(timeout=20)
