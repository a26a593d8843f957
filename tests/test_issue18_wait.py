"""Regression tests for issue 18 §2: ``--wait`` / ``--wait-timeout`` wait for another run's lock
on the output folder (two processes), instead of failing at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import polars as pl
import pytest
from typer.testing import CliRunner

from centile.cli import app

runner = CliRunner()

#: holds the lock of the folder argv[1] until a line arrives on stdin (or argv[2] seconds pass),
#: then writes the release time to argv[3]
HOLD = """
import select, sys, time
from pathlib import Path
from centile.io.outputs import folder_lock
with folder_lock(Path(sys.argv[1]).resolve()):
    print("locked", flush=True)
    select.select([sys.stdin], [], [], float(sys.argv[2]))
    Path(sys.argv[3]).write_text(repr(time.time()))
"""


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    pl.DataFrame({"customer_id": [1, 1, 2, 3], "order_id": [1, 2, 3, 4],
                  "order_ts": ["2024-01-05", "2024-02-01", "2024-03-01", "2024-03-02"],
                  "unit_price": [10.0, 20.0, 5.0, 7.5]}).write_csv(folder / "orders.csv")
    return folder


def _hold(out, seconds, marker):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(out), str(seconds), str(marker)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def _features(data, out, *extra):
    return subprocess.run([sys.executable, "-m", "centile.cli", "features", "--data", str(data), "--out", str(out),
                           *extra], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})


def test_issue18_wait_runs_once_the_other_run_is_done(data, tmp_path):
    out, released = tmp_path / "out", tmp_path / "released"
    holder = _hold(out, 120.0, released)
    second = subprocess.Popen([sys.executable, "-m", "centile.cli", "features", "--data", str(data), "--out",
                               str(out), "--wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "COLUMNS": "300"})
    try:
        told = ""
        while "waiting" not in told:  # the second run says it waits, and for whom
            line = second.stderr.readline()
            assert line, "the second run ended without waiting"
            told = line
        assert "being written by another centile run (pid" in told and "waiting for it to finish" in told, told
        assert second.poll() is None  # still waiting
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0
        rest = second.communicate(timeout=300)[1]
    finally:
        for proc in (holder, second):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert second.returncode == 0, rest
    assert "is free after" in rest
    # it wrote only after the other process let go of the folder
    assert (out / "features.parquet").stat().st_mtime >= float(released.read_text()) - 0.01


def test_issue18_wait_timeout_gives_up_with_exit_1(data, tmp_path):
    out = tmp_path / "out"
    holder = _hold(out, 120.0, tmp_path / "released")
    try:
        t0 = time.monotonic()
        p = _features(data, out, "--wait-timeout", "1.5")
        took = time.monotonic() - t0
        q = _features(data, out)  # no --wait: fails at once, pointing at --wait
    finally:
        holder.kill()
        holder.wait()
    assert p.returncode == 1, p.stderr
    assert "still being written by another centile run" in p.stderr and "--wait-timeout 1.5" in p.stderr
    assert took < 60
    assert q.returncode == 1 and "(--wait)" in q.stderr, q.stderr
    assert not (out / "features.parquet").exists()


def test_issue18_two_runs_with_wait_both_finish_into_a_complete_folder(data, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "centile.cli", "features", "--data", str(data), "--out", str(out), "--wait"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = [proc.communicate(timeout=300) for proc in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, results
    assert pl.read_parquet(out / "features.parquet").height == 3
    assert {"features.parquet", "manifest.json"} <= {f.name for f in out.iterdir()}
    assert not list(out.glob(".centile-tmp-*")) and not list(tmp_path.glob(".out.centile-*"))  # none left


def test_issue18_every_command_writing_an_out_folder_takes_wait():
    import typer.main

    group = typer.main.get_command(app)
    writers = []
    for name, cmd in group.commands.items():
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        if "--out" in opts and name not in ("report", "sql"):  # those write one file, not a folder
            writers.append(name)
            assert {"--wait", "--wait-timeout"} <= opts, name
    assert {"run", "features", "clubs", "generate", "steer"} <= set(writers)


def test_issue18_negative_wait_timeout_is_a_usage_error(data, tmp_path):
    r = runner.invoke(app, ["features", "--data", str(data), "--out", str(tmp_path / "o"), "--wait-timeout", "-1"])
    assert r.exit_code != 0 and not (tmp_path / "o").exists()
