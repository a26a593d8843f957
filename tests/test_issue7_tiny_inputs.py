"""Issue 7 regression: `centile run` on a tiny order history finishes (exit 0): stages that
cannot work on so few customers skip their part with a note instead of failing the run."""

from __future__ import annotations

import datetime as dt

import polars as pl
from typer.testing import CliRunner

from centile.cli import app


def test_run_on_three_customers_finishes_with_notes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    pl.DataFrame({"customer_id": [1, 1, 2, 3],
                  "order_ts": [dt.datetime(2024, 1, 1), dt.datetime(2024, 3, 1), dt.datetime(2024, 2, 1),
                               dt.datetime(2024, 2, 2)],
                  "unit_price": [10.0, 20.0, 5.0, 0.0]}).write_parquet(data / "orders.parquet")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["run", "--data", str(data), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "clustering skipped: [segments] k = 'auto'" in r.stdout.replace("\n", " ")
    assert pl.read_parquet(out / "segments.parquet").height == 3
    assert (out / "report.html").stat().st_size > 1000
