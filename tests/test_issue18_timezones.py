"""Regression tests for issue 18 §3: a per-table ``timezone`` turns zoned timestamps into
wall-clock times of that zone; naive timestamps stay as they are; the machine's TZ changes
nothing."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from centile.cli import app
from centile.config import load_config
from centile.errors import ConfigError

runner = CliRunner()

#: order timestamps with offsets, a zone name, 'Z' and one naive value
TS = ["2024-03-01T23:30:00+05:00", "2024-03-02T00:30:00-03:00", "2024-05-01T10:00:00Z",
      "2024-05-31 20:00:00 Europe/Berlin", "2024-06-01 01:00:00"]
#: the same instants as wall-clock times in Asia/Tokyo (UTC+9, no daylight saving); the naive one unchanged
TOKYO = ["2024-03-02 03:30:00", "2024-03-02 12:30:00", "2024-05-01 19:00:00", "2024-06-01 03:00:00",
         "2024-06-01 01:00:00"]
UTC = ["2024-03-01 18:30:00", "2024-03-02 03:30:00", "2024-05-01 10:00:00", "2024-05-31 18:00:00",
       "2024-06-01 01:00:00"]


def _orders_csv(folder, ts):
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"customer_id": [1, 1, 2, 2, 3], "order_id": [1, 2, 3, 4, 5], "order_ts": ts,
                  "unit_price": [10.0, 20.0, 5.0, 7.5, 3.0]}).write_csv(folder / "orders.csv")


def _config(tmp_path, data, zone=None):
    cfg = tmp_path / f"c-{(zone or 'default').replace('/', '_')}.toml"
    body = f'data = "{data}"\nas_of = "2024-06-02"\n'
    if zone:
        body += f'[tables.orders]\ntimezone = "{zone}"\n'
    cfg.write_text(body)
    return cfg


def _typed_ts(cfg_path):
    from centile.backend import open_session

    with open_session(load_config(cfg_path)) as s:
        df = s.frame("SELECT order_id, CAST(order_ts AS VARCHAR) AS ts FROM orders ORDER BY order_id")
    return df["ts"].to_list()


@pytest.mark.parametrize(("zone", "expected"), [(None, UTC), ("UTC", UTC), ("Asia/Tokyo", TOKYO)])
def test_issue18_zoned_text_becomes_wall_clock_of_the_table_zone(tmp_path, zone, expected):
    _orders_csv(tmp_path / "data", TS)
    assert _typed_ts(_config(tmp_path, tmp_path / "data", zone)) == expected


def test_issue18_zone_aware_parquet_becomes_wall_clock_of_the_table_zone(tmp_path):
    (tmp_path / "data").mkdir()
    instants = [dt.datetime(2024, 3, 1, 15, 30, tzinfo=dt.UTC), dt.datetime(2024, 5, 30, 23, 0, tzinfo=dt.UTC)]
    for unit in ("us", "ns"):  # pandas writes nanoseconds, which DuckDB reads as TIMESTAMPTZ_NS
        pq.write_table(pa.table({
            "customer_id": [1, 2], "order_id": [1, 2], "unit_price": [1.0, 2.0],
            "order_ts": pa.array(instants, pa.timestamp(unit, tz="Europe/Berlin"))}),
            tmp_path / "data" / "orders.parquet")
        assert _typed_ts(_config(tmp_path, tmp_path / "data", "Asia/Tokyo")) == [
            "2024-03-02 00:30:00", "2024-05-31 08:00:00"]
        assert _typed_ts(_config(tmp_path, tmp_path / "data")) == ["2024-03-01 15:30:00", "2024-05-30 23:00:00"]


def test_issue18_naive_timestamps_stay_as_they_are(tmp_path):
    naive = ["2024-03-01 23:30:00", "2024-03-02", "2024-05-01 10:00:00.250", "2024-05-31 20:00:00",
             "2024-06-01 01:00:00"]
    _orders_csv(tmp_path / "data", naive)
    got = _typed_ts(_config(tmp_path, tmp_path / "data", "Asia/Tokyo"))
    assert got == ["2024-03-01 23:30:00", "2024-03-02 00:00:00", "2024-05-01 10:00:00.25",
                   "2024-05-31 20:00:00", "2024-06-01 01:00:00"]


def test_issue18_an_unreadable_zone_suffix_is_rejected_not_dropped(tmp_path):
    _orders_csv(tmp_path / "data", [*TS[:4], "2024-06-01 01:00:00 Mars/Olympus"])
    from centile.backend import open_session

    with open_session(load_config(_config(tmp_path, tmp_path / "data", "Asia/Tokyo"))) as s:
        assert s.frame("SELECT count(*) AS n FROM orders")["n"][0] == 4
        rej = s.frame("SELECT reason FROM rejects")["reason"].to_list()
    assert len(rej) == 1 and "order_ts" in rej[0], rej


def test_issue18_table_zone_gives_local_dates_and_the_machine_tz_changes_no_byte(tmp_path):
    _orders_csv(tmp_path / "data", TS)
    cfg = _config(tmp_path, tmp_path / "data", "Asia/Tokyo")
    digests = []
    for tz in ("UTC", "America/Los_Angeles"):
        out = tmp_path / f"out-{tz.replace('/', '_')}"
        p = subprocess.run([sys.executable, "-m", "centile.cli", "features", "-c", str(cfg), "--out", str(out)],
                           env={**os.environ, "TZ": tz}, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        digests.append((out / "features.parquet").read_bytes())
    assert digests[0] == digests[1]
    f = pl.read_parquet(tmp_path / "out-UTC" / "features.parquet").sort("customer_id")
    assert f["first_order_ts"][0] == dt.datetime(2024, 3, 2, 3, 30)  # 23:30 at +05:00 is 03:30 in Tokyo
    # as_of 2024-06-02: the last Tokyo dates are 2 March (1), 1 June (2: 03:00 in Tokyo, 31 May in
    # UTC), 1 June (3, naive)
    days = dict(zip(f["customer_id"].to_list(), f["recency_days"].to_list(), strict=True))
    assert days == {1: (dt.date(2024, 6, 2) - dt.date(2024, 3, 2)).days, 2: 1, 3: 1}


@pytest.mark.parametrize(("value", "message"), [
    ('"Europe/Berlinn"', "did you mean 'Europe/Berlin'"),
    ('"Mars/Olympus"', "IANA zone name"),
    ("9", "expected a time zone name"),
])
def test_issue18_a_bad_zone_name_fails_at_load_naming_the_key(tmp_path, value, message):
    _orders_csv(tmp_path / "data", TS)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'data = "{tmp_path / "data"}"\n[tables.orders]\ntimezone = {value}\n')
    with pytest.raises(ConfigError, match=r"\[tables\.orders\] timezone") as err:
        load_config(cfg)
    assert message in str(err.value)
    r = runner.invoke(app, ["validate", "-c", str(cfg)])
    assert r.exit_code == 1 and "[tables.orders] timezone" in r.stderr and message in r.stderr, r.output


def test_issue18_zone_names_are_spelt_as_duckdb_spells_them(tmp_path):
    _orders_csv(tmp_path / "data", TS)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'data = "{tmp_path / "data"}"\n[tables.orders]\ntimezone = "asia/tokyo"\n')
    c = load_config(cfg)
    assert c.tables["orders"].timezone == "Asia/Tokyo"
    assert c.as_dict()["tables"]["orders"]["timezone"] == "Asia/Tokyo"
