"""Regression tests for issue 18, items 5 and 8: duplicate order lines, texts read as NULL, and
read errors that name the real cause and the fix."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from centile.backend.session import open_session
from centile.cli import app
from centile.config import load_config
from centile.errors import ConfigError

runner = CliRunner()

HEADER = "customer_id,order_id,order_ts,unit_price,quantity,product_id\n"
LINES = ["1,a,2024-01-01,10.0,1,p1\n", "1,a,2024-01-01,4.0,2,p2\n", "2,b,2024-01-05,7.5,1,p1\n",
         "2,c,2024-02-05,3.0,1,p3\n", "3,d,2024-02-07,1.0,5,p2\n"]


def _orders(folder: Path, text: str | bytes, name: str = "orders.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return folder


def _config(tmp_path: Path, data: Path, orders: str = "") -> Path:
    cfg = tmp_path / "centile.toml"
    cfg.write_text(f'data = "{data}"\n' + (f"[tables.orders]\n{orders}" if orders else ""))
    return cfg


def _revenue(session) -> float:
    return session.con.execute("SELECT sum(quantity * unit_price) FROM orders").fetchone()[0]


# --- item 5: duplicates -------------------------------------------------------------------------

def test_issue18_exact_duplicate_lines_are_set_aside(tmp_path):
    dup = LINES[0] * 3 + LINES[2] * 2
    data = _orders(tmp_path / "d", HEADER + "".join(LINES) + dup)
    with open_session(load_config(data=data)) as s:
        assert s.summaries["orders"].rejects == {"duplicate line": 5}
        assert s.summaries["orders"].rows_valid == len(LINES)
        assert _revenue(s) == pytest.approx(10 + 8 + 7.5 + 3 + 5)
        rej = s.con.execute("SELECT reason, key, record FROM rejects").fetchall()
    assert sorted(r[1] for r in rej) == ["1", "1", "1", "2", "2"]
    assert all(r[0] == "duplicate line" and '"order_id":"a"' in r[2] or '"order_id":"b"' in r[2] for r in rej)


def test_issue18_lines_differing_in_one_column_are_not_duplicates(tmp_path):
    other = "1,a,2024-01-01,10.0,1,p9\n"  # same as LINES[0] but the product
    data = _orders(tmp_path / "d", HEADER + "".join(LINES) + other)
    with open_session(load_config(data=data)) as s:
        assert s.summaries["orders"].rejects == {}
        assert s.summaries["orders"].rows_valid == len(LINES) + 1


def test_issue18_duplicates_keep_keeps_them_with_a_note(tmp_path):
    data = _orders(tmp_path / "d", HEADER + "".join(LINES) + LINES[0] * 2)
    with open_session(load_config(_config(tmp_path, data, 'duplicates = "keep"\n'))) as s:
        assert s.summaries["orders"].rejects == {}
        assert s.summaries["orders"].rows_valid == len(LINES) + 2
        assert any("2 exact duplicate lines kept" in n for n in s.notes)


def test_issue18_duplicates_set_aside_the_same_lines_at_any_thread_count(tmp_path):
    import random

    rng = random.Random(5)
    lines = [f"{rng.randint(1, 10)},o{rng.randint(1, 5)},2024-01-{rng.randint(1, 3):02d},"
             f"{rng.choice([1.0, 2.5])},{rng.randint(1, 2)},p{rng.randint(1, 3)}\n" for _ in range(3000)]
    data = _orders(tmp_path / "d", HEADER + "".join(lines))
    expected = len(lines) - len(set(lines))
    assert expected > 100
    out = []
    for threads in (1, 2):
        with open_session(load_config(data=data).with_(threads=threads)) as s:
            assert s.summaries["orders"].rejects == {"duplicate line": expected}
            out.append(s.frame("SELECT * FROM orders ORDER BY ALL"))
    assert out[0].equals(out[1]) and out[0].height == len(set(lines))


def test_issue18_duplicates_key_is_checked(tmp_path):
    data = _orders(tmp_path / "d", HEADER + "".join(LINES))
    with pytest.raises(ConfigError, match=r"\[tables.orders\] duplicates = 'drop'.*set_aside"):
        load_config(_config(tmp_path, data, 'duplicates = "drop"\n'))
    cfg = tmp_path / "c2.toml"
    cfg.write_text(f'data = "{data}"\n[tables.orders]\npath = "{data}/orders.csv"\n'
                   f'[tables.products]\npath = "{data}/orders.csv"\nduplicates = "keep"\n')
    with pytest.raises(ConfigError, match="only \\[tables.orders\\]"):
        load_config(cfg)


# --- item 5: texts read as NULL -----------------------------------------------------------------

def test_issue18_null_text_in_a_csv_id_column_is_no_customer(tmp_path):
    data = _orders(tmp_path / "d", HEADER + "".join(LINES) + "NULL,e,2024-02-08,2.0,1,p1\n"
                   "N/A,f,2024-02-09,2.0,1,NA\n")
    with open_session(load_config(data=data)) as s:
        assert s.summaries["orders"].rejects == {"customer_id is null (guest order)": 2}
        ids = s.frame("SELECT DISTINCT customer_id FROM orders ORDER BY 1")
    assert ids.schema["customer_id"] == pl.Int64  # the ids stay integers
    assert ids["customer_id"].to_list() == [1, 2, 3]


def test_issue18_null_text_in_parquet_id_and_text_columns(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    pl.DataFrame({"customer_id": ["1", "NULL", " null ", "2"], "order_ts": ["2024-01-01"] * 4,
                  "unit_price": [1.0, 2.0, 3.0, 4.0], "channel": ["web", "NA", "", "shop"]}
                 ).write_parquet(d / "orders.parquet")
    with open_session(load_config(data=d)) as s:
        assert s.summaries["orders"].rejects == {"customer_id is null (guest order)": 2}
        rows = s.frame("SELECT customer_id, channel FROM orders_valid ORDER BY 1")
    assert rows.rows() == [("1", "web"), ("2", "shop")]


def test_issue18_null_strings_can_be_changed(tmp_path):
    data = _orders(tmp_path / "d", HEADER + "".join(LINES) + "-,e,2024-02-08,2.0,1,p1\n")
    with open_session(load_config(_config(tmp_path, data, 'null_strings = ["-"]\n'))) as s:
        assert s.summaries["orders"].rejects == {"customer_id is null (guest order)": 1}
    with pytest.raises(ConfigError, match="null_strings"):
        load_config(_config(tmp_path, data, 'null_strings = "NULL"\n'))


# --- item 8: messages that point the right way --------------------------------------------------

def _features(tmp_path: Path, data: Path, *extra: str):
    return runner.invoke(app, ["features", "--data", str(data), "--out", str(tmp_path / "out"), *extra])


@pytest.mark.parametrize("late", [False, True])
def test_issue18_a_ragged_csv_row_is_named(tmp_path, late):
    body = "".join(f"{i},o{i},2024-01-01,1.0,1,p1\n" for i in range(30_000 if late else 3))
    data = _orders(tmp_path / "d", HEADER + body + "5,x,2024-01-02,5.0,1,p1,extra\n")
    r = _features(tmp_path, data)
    assert r.exit_code == 1, r.output
    assert "ragged row" in r.stderr and f"line {len(body.splitlines()) + 2}" in r.stderr
    assert "has 7 fields where the header has 6" in r.stderr and "required column" not in r.stderr


@pytest.mark.parametrize("late", [False, True])
def test_issue18_non_utf8_input_points_to_the_encoding_option(tmp_path, late):
    body = "".join(f"{i},o{i},2024-01-01,1.0,1,p1\n" for i in range(30_000 if late else 2))
    data = _orders(tmp_path / "d", (HEADER + body).encode() + b"5,caf\xe9,2024-01-02,5.0,1,p1\n")
    r = _features(tmp_path, data)
    assert r.exit_code == 1, r.output
    assert "not UTF-8" in r.stderr and '[tables.orders.csv] encoding = "latin-1"' in r.stderr
    cfg = _config(tmp_path, data, f'path = "{data}/orders.csv"\n[tables.orders.csv]\nencoding = "latin-1"\n')
    with open_session(load_config(cfg)) as s:
        assert "café" in s.frame("SELECT order_id FROM orders")["order_id"].to_list()


def test_issue18_an_empty_file_is_called_empty(tmp_path):
    data = _orders(tmp_path / "d", "")
    r = _features(tmp_path, data)
    assert r.exit_code == 1, r.output
    assert "is empty (0 bytes" in r.stderr and "column0" not in r.stderr


def test_issue18_as_of_before_every_order_does_not_mention_calibration_end(tmp_path):
    data = _orders(tmp_path / "d", HEADER + "".join(LINES))
    r = runner.invoke(app, ["clv", "--data", str(data), "--out", str(tmp_path / "out"), "--as-of", "2023-06-01"])
    assert r.exit_code == 1, r.output
    assert "--calibration-end" not in r.stderr
    assert "no order line before as_of 2023-06-01" in r.stderr and "2024-01-01" in r.stderr
    r = runner.invoke(app, ["clv", "--data", str(data), "--out", str(tmp_path / "out"),
                            "--calibration-end", "2023-06-01"])
    assert r.exit_code == 1 and "--calibration-end" in r.stderr, r.output


def test_issue18_without_an_order_id_equal_rows_are_two_purchases(tmp_path):
    # CDNOW-like histories (customer, day, amount) repeat a row for two purchases on one day
    data = _orders(tmp_path / "d", "customer_id,order_ts,unit_price\n1,2024-01-01,5\n1,2024-01-01,5\n")
    with open_session(load_config(data=data)) as s:
        assert s.summaries["orders"].rejects == {} and s.summaries["orders"].rows_valid == 2


# --- item 9: centile warmup ---------------------------------------------------------------------

def test_issue18_warmup_compiles_the_kernels_a_run_uses():
    import json

    r = runner.invoke(app, ["warmup", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    mods = doc["modules"]
    for name in ("percentile", "clubs", "btyd", "bootstrap", "hashing", "contact_plan", "recommend",
                 "pairs", "paths", "synth"):
        assert mods[name]["loaded"] > 0 and mods[name]["compile_seconds"] >= 0, name
    from centile.kernels import btyd, clubs

    # both club strategies and Pareto/NBD, which the demo configuration does not use
    assert clubs._priority.signatures and clubs._best_rank.signatures
    assert btyd._pnbd_predict.signatures and btyd._pnbd_ll_sum.signatures
    assert "WARNING" not in r.stderr  # the warm-up's own data is not the user's
