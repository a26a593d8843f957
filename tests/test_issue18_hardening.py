"""Regression tests for issue 18 (hardening): the SQL boundary, one run per output folder,
time zones and honest exit codes."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from centile.cli import app
from centile.config import load_config
from centile.errors import ConfigError

runner = CliRunner()

STACKED = "1=1); COPY (SELECT * FROM read_csv('/etc/passwd', header=false, sep='|')) TO '{out}'; SELECT 1 WHERE (1=1"
READ = "(SELECT count(*) FROM read_csv('/etc/passwd', header=false, sep='|')) > 0"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from centile.synth import generate

    root = tmp_path_factory.mktemp("issue18")
    generate(root / "data", 2_000, seed=3)
    return root / "data"


@pytest.mark.parametrize("section", [
    '[tables.orders]\nfilter = "{expr}"\n',
    '[[clubs.club]]\nname = "x"\nmetric = "orders_12m"\neligible = "{expr}"\n',
    '[segments.rules]\nsneaky = [["a", "{expr}"]]\n',
])
@pytest.mark.parametrize("attack", [STACKED, READ])
def test_issue18_config_sql_is_one_expression_and_reads_no_file(data, tmp_path, section, attack):
    leak = tmp_path / "leak.csv"
    expr = attack.format(out=leak).replace('"', '\\"')
    cfg = tmp_path / "centile.toml"
    cfg.write_text(f'data = "{data}"\n' + section.format(expr=expr))
    r = runner.invoke(app, ["run", "-c", str(cfg), "--out", str(tmp_path / "out")])
    assert r.exit_code == 1, r.output
    assert str(cfg) in r.stderr and ("one SQL expression" in r.stderr or "not a SQL expression" in r.stderr
                                     or "subqueries and table functions" in r.stderr)
    assert not leak.exists() and not (tmp_path / "out").exists()


def test_issue18_a_column_mapping_cannot_read_files(data, tmp_path):
    cfg = tmp_path / "centile.toml"
    cfg.write_text(f'data = "{data}"\n[tables.orders.columns]\nchannel = "{READ}"\n')
    r = runner.invoke(app, ["validate", "-c", str(cfg)])
    assert r.exit_code == 1 and "table functions" in r.stderr, r.output


def test_issue18_the_session_reads_only_its_inputs(data):
    from centile.backend import open_session

    with open_session(load_config(data=data)) as s:
        assert s.frame("SELECT count(*) AS n FROM orders")["n"][0] > 0
        with pytest.raises(Exception, match="disabled by configuration|Permission"):
            s.frame("SELECT * FROM read_csv('/etc/passwd', header=false, sep='|')")
        with pytest.raises(Exception, match="disabled by configuration|Permission|lock"):
            s.con.execute("SET enable_external_access = true")


def test_issue18_a_second_run_into_the_same_folder_fails_at_once(data, tmp_path):
    from centile.io.outputs import folder_lock

    out = tmp_path / "out"
    with folder_lock(out):
        r = runner.invoke(app, ["run", "--data", str(data), "--out", str(out)])
    assert r.exit_code == 1, r.output
    assert "being written by another centile run" in r.stderr and f"pid {os.getpid()}" in r.stderr
    assert not out.exists()
    r = runner.invoke(app, ["run", "--data", str(data), "--out", str(out)])  # the lock died with its holder
    assert r.exit_code == 0, r.output


def test_issue18_time_zone_of_the_machine_does_not_change_bytes(tmp_path):
    (tmp_path / "data").mkdir()
    ts = ["2024-03-01T23:30:00+05:00", "2024-03-02T00:30:00-03:00", "2024-05-01T10:00:00+09:00",
          "2024-05-31T23:59:00+00:00", "2024-06-01T01:00:00+02:00"]
    pl.DataFrame({"customer_id": [1, 1, 2, 2, 3], "order_id": [1, 2, 3, 4, 5], "order_ts": ts,
                  "unit_price": [10.0, 20.0, 5.0, 7.5, 3.0]}).write_csv(tmp_path / "data" / "orders.csv")
    digests = []
    for tz in ("UTC", "Asia/Tokyo", "America/Los_Angeles"):
        out = tmp_path / f"out-{tz.replace('/', '_')}"
        p = subprocess.run([sys.executable, "-m", "centile.cli", "features", "--data", str(tmp_path / "data"),
                            "--out", str(out), "--as-of", "2024-06-02"],
                           env={**os.environ, "TZ": tz}, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        digests.append((out / "features.parquet").read_bytes())
    assert digests[0] == digests[1] == digests[2]


def test_issue18_environment_errors_exit_1_not_2():
    from centile.cli.app import _environment_error

    assert "No space left" in _environment_error(OSError(errno.ENOSPC, "No space left on device", "/x/out"))
    assert "Read-only" in _environment_error(OSError(errno.EROFS, "Read-only file system", "/x"))
    assert _environment_error(ValueError("a bug")) is None
    # DuckDB out of its share of --memory-limit: the budget, not a bug
    import duckdb

    con = duckdb.connect()
    con.execute("SET memory_limit = '8MB'")
    with pytest.raises(duckdb.OutOfMemoryException) as oom:
        con.execute("SELECT list(i) FROM range(5000000) t(i)").fetchall()
    assert "Raise --memory-limit" in _environment_error(oom.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; run as a normal user")
def test_issue18_read_only_output_folder_exits_1(data, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = runner.invoke(app, ["run", "--data", str(data), "--out", str(ro / "out")])
    finally:
        ro.chmod(0o755)
    assert r.exit_code == 1, r.output


def test_issue18_wrong_config_type_is_a_config_error(data, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'data = "{data}"\n[clubs]\nshares = "0.01"\n')
    with pytest.raises(ConfigError, match=r"\[clubs\] shares"):
        load_config(cfg)
    assert Path(cfg).exists()


def test_issue18_a_degenerate_bgnbd_fit_is_flagged():
    from centile.clv.compute import weakly_identified
    from centile.clv.models import FitResult

    edge = FitResult("bgnbd", {"r": 0.8, "alpha": 30.0, "a": 0.003, "b": 7.26},
                     {"r": 0.05, "alpha": 2.0, "a": 0.010, "b": 25.9}, -1000.0, True, 30, 4300, 100)
    (note,) = weakly_identified(edge)
    assert "edge of its parameter space" in note and "a = 0.003" in note and "b = 7.26" in note
    # the published CDNOW fit (Fader, Hardie & Lee 2005) is well identified
    cdnow = FitResult("bgnbd", {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426},
                      {"r": 0.013, "alpha": 0.38, "a": 0.19, "b": 0.71}, -9582.4, True, 30, 2357, 1000)
    assert weakly_identified(cdnow) == []


def test_issue18_sql_read_only(data, tmp_path):
    leak = tmp_path / "leak.csv"
    r = runner.invoke(app, ["sql", f"COPY (SELECT 1) TO '{leak}'", "--data", str(data), "--read-only"])
    assert r.exit_code == 1 and "--read-only" in r.stderr and not leak.exists()
    r = runner.invoke(app, ["sql", "SELECT * FROM read_csv('/etc/passwd', header=false, sep='|')", "--data",
                            str(data), "--read-only"])
    assert r.exit_code == 1 and "disabled by configuration" in r.stderr, r.output
    r = runner.invoke(app, ["sql", "SELECT count(*) AS n FROM orders", "--data", str(data), "--read-only",
                            "--format", "csv"])
    assert r.exit_code == 0 and r.stdout.splitlines()[0] == "n", r.output
    # without --read-only it is the user's own console
    r = runner.invoke(app, ["sql", "SELECT 1 AS x", "--data", str(data), "--format", "csv"])
    assert r.exit_code == 0


def test_issue18_files_with_different_columns_fail_unless_mapped(tmp_path):
    import datetime as dt

    (tmp_path / "orders").mkdir()
    pl.DataFrame({"customer_id": [1, 2], "order_id": [1, 2], "order_ts": [dt.datetime(2024, 1, 1)] * 2,
                  "unit_price": [1.0, 2.0]}).write_parquet(tmp_path / "orders" / "a.parquet")
    pl.DataFrame({"customer_id": [3, 4], "order_id": [3, 4], "order_ts": [dt.datetime(2024, 1, 2)] * 2,
                  "price": [1.0, 2.0]}).write_parquet(tmp_path / "orders" / "b.parquet")
    r = runner.invoke(app, ["validate", "--data", str(tmp_path)])
    assert r.exit_code == 1 and "`unit_price`" in r.stderr and "b.parquet" in r.stderr, r.output
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'data = "{tmp_path}"\n[tables.orders.columns]\nunit_price = "coalesce(unit_price, price)"\n')
    r = runner.invoke(app, ["validate", "-c", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
