"""CLI tests with Typer's CliRunner, asserting on the files written (sqlite-utils style)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from centile import __version__
from centile.cli import app

from .test_features import AS_OF, _emails, _orders, _products

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    _orders().write_parquet(d / "orders.parquet")
    _products().write_parquet(d / "products.parquet")
    _emails().write_parquet(d / "email_events.parquet")
    return d


def _commands():
    return sorted(c.name or c.callback.__name__ for c in app.registered_commands)


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and __version__ in r.stdout


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help_and_is_in_readme(command):
    r = runner.invoke(app, [command, "--help"])
    assert r.exit_code == 0, r.output
    assert len(r.stdout.strip().splitlines()) > 3
    readme = (ROOT / "README.md").read_text()
    assert re.search(rf"centile {command}\b", readme), f"`centile {command}` is not documented in README.md"


def test_validate_prints_counts_and_json(data):
    r = runner.invoke(app, ["validate", "--data", str(data), "--as-of", AS_OF])
    assert r.exit_code == 0, r.output
    assert "orders" in r.stdout and "unit_price is negative" in r.stdout
    r = runner.invoke(app, ["validate", "--data", str(data), "--as-of", AS_OF, "--json"])
    doc = json.loads(r.stdout)
    assert doc["tables"]["orders"]["rows_rejected"] == 2
    assert doc["features_available"]["email"] is True


def test_validate_strict_exit_code(data):
    r = runner.invoke(app, ["validate", "--data", str(data), "--strict"])
    assert r.exit_code == 1
    assert "Error:" in r.stderr and "invalid rows" in r.stderr


def test_features_writes_files_and_sql_reads_them(data, tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, ["features", "-d", str(data), "--as-of", AS_OF, "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert {"features.parquet", "rejects.parquet", "manifest.json"} <= {p.name for p in out.iterdir()}
    assert pl.read_parquet(out / "features.parquet").height == 3
    r = runner.invoke(app, ["sql", "SELECT customer_id, orders_12m FROM features ORDER BY 1",
                            "--results", str(out), "--format", "csv"])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == ["customer_id,orders_12m", "1,2", "2,2", "3,0"]
    # inputs and outputs together; json and parquet outputs
    q = ("SELECT f.customer_id, count(*) AS lines FROM orders o JOIN features f USING (customer_id) "
         "GROUP BY 1 ORDER BY 1")
    r = runner.invoke(app, ["sql", q, "-d", str(data), "--as-of", AS_OF, "-r", str(out), "-f", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == [{"customer_id": 1, "lines": 5}, {"customer_id": 2, "lines": 2}]
    pq = tmp_path / "q.parquet"
    r = runner.invoke(app, ["sql", "SELECT * FROM rejects", "-d", str(data), "-f", "parquet", "-o", str(pq)])
    assert r.exit_code == 0 and pl.read_parquet(pq).height == 2


def test_sql_errors_list_the_tables(data, tmp_path):
    r = runner.invoke(app, ["sql", "SELECT * FROM nope", "-d", str(data)])
    assert r.exit_code == 1
    assert "nope" in r.stderr and "orders" in r.stderr


def test_missing_data_folder_is_a_clear_error(tmp_path):
    r = runner.invoke(app, ["features", "-d", str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "not a folder" in r.stderr
