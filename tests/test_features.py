"""Feature SQL on tiny hand-written tables with exact expected values (sqlmesh-style fixtures)."""

from __future__ import annotations

import datetime as dt
import json
import math

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from centile.config import load_config
from centile.errors import ConfigError, InputError, ValidationError
from centile.features import run_features

D = dt.datetime
AS_OF = "2024-07-01"  # s6 = 2024-01-01, s12 = 2023-07-02, s24 = 2022-07-02


def _orders() -> pl.DataFrame:
    rows = [
        # customer, order, ts, product, qty, price, returned, cost, channel
        (1, 100, D(2024, 3, 10), 1, 2, 10.0, 1, 6.0, "web"),     # A: 6m; one of two returned
        (1, 100, D(2024, 3, 10), 2, 1, 0.0, 0, None, "web"),     # A: free item, no revenue
        (1, 101, D(2023, 7, 2), 3, 1, 50.0, 0, None, "app"),     # B: exactly at s12 -> in 12m
        (1, 102, D(2023, 7, 1, 23, 59), 4, 1, 30.0, 0, None, "app"),  # C: just before s12
        (1, 103, D(2024, 4, 1), 3, -1, 50.0, 0, None, "app"),    # D: return line of B
        (1, 104, D(2024, 7, 1), 1, 5, 10.0, 0, None, "web"),     # at as_of: excluded
        (2, 200, D(2024, 6, 30), 1, 1, 10.0, 1, None, "web"),    # returned in full
        (2, 201, D(2024, 6, 29), 2, 1, 5.0, 0, None, "phone"),   # channel tie web/phone
        (None, 300, D(2024, 5, 1), 1, 1, 10.0, 0, None, "web"),  # guest order -> reject
        (2, 202, D(2024, 5, 1), 1, 1, -3.0, 0, None, "web"),     # negative price -> reject
    ]
    cols = ["customer_id", "order_id", "order_ts", "product_id", "quantity", "unit_price",
            "returned_quantity", "unit_cost", "channel"]
    return pl.DataFrame(rows, schema=cols, orient="row")


def _products() -> pl.DataFrame:
    return pl.DataFrame({"product_id": [1, 2, 3, 4], "category": ["toys", "toys", "books", "books"],
                         "market_price": [8.0, 0.0, 40.0, 20.0]})


def _emails() -> pl.DataFrame:
    rows = [
        (1, 1, D(2024, 1, 5), "sent"), (1, 1, D(2024, 1, 6), "open"), (1, 1, D(2024, 1, 6), "click"),
        (1, 2, D(2024, 2, 5), "sent"),
        (1, 3, D(2023, 6, 1), "sent"), (1, 3, D(2023, 6, 2), "open"),   # sent before the window
        (1, 4, D(2024, 3, 1), "sent"), (1, 4, D(2024, 3, 2), "click"),  # click implies open
        (3, 1, D(2024, 1, 5), "sent"), (3, 1, D(2024, 1, 7), "opened"),
        (3, 2, D(2024, 2, 5), "sent"), (3, 2, D(2024, 2, 6), "open"), (3, 2, D(2024, 2, 6), "click"),
        (3, 5, D(2024, 6, 30), "sent"), (3, 5, D(2024, 7, 1), "open"),  # open at as_of: not counted
    ]
    return pl.DataFrame(rows, schema=["customer_id", "campaign_id", "ts", "event"], orient="row")


@pytest.fixture
def full(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    _orders().write_parquet(d / "orders.parquet")
    _products().write_parquet(d / "products.parquet")
    _emails().write_parquet(d / "email_events.parquet")
    pl.DataFrame({"customer_id": [1, 4], "region": ["north", "south"]}).write_parquet(d / "customers.parquet")
    return d


def _row(df: pl.DataFrame, cid) -> dict:
    rows = df.filter(pl.col("customer_id") == cid).to_dicts()
    assert len(rows) == 1, f"customer {cid} appears {len(rows)} times"
    return rows[0]


def test_features_exact_values(full):
    res = run_features(load_config(data=full, as_of=AS_OF))
    df = res.features
    assert df["customer_id"].to_list() == [1, 2, 3, 4]  # universe: orders, emails, customers
    c1 = _row(df, 1)
    expected_c1 = {
        "recency_days": 113, "first_order_ts": D(2023, 7, 1, 23, 59), "last_order_ts": D(2024, 3, 10),
        "tenure_days": 366, "orders_6m": 1, "orders_12m": 2, "orders_total": 3,
        "gross_revenue_12m": 70.0, "returned_value_12m": 60.0, "net_revenue_12m": 10.0,
        "gross_revenue_lifetime": 100.0, "returned_value_lifetime": 60.0, "net_revenue_lifetime": 40.0,
        "avg_order_value_12m": 35.0, "max_price_kept_24m": 30.0,
        "premium_margin_12m": 4.0,   # (10-6)*1 + 50*1 - 50*1
        "emails_sent_12m": 3, "preferred_channel": "app", "top_category": "books",
        "share_books": 0.75, "share_toys": 0.25,
    }
    for k, v in expected_c1.items():
        assert c1[k] == pytest.approx(v) if isinstance(v, float) else c1[k] == v, k
    assert c1["return_rate_12m"] == pytest.approx(60 / 70)
    assert c1["open_rate_12m"] == pytest.approx(2 / 3)
    assert c1["click_rate_12m"] == pytest.approx(2 / 3)

    c2 = _row(df, 2)
    assert (c2["orders_12m"], c2["gross_revenue_12m"], c2["returned_value_12m"]) == (2, 15.0, 10.0)
    assert c2["max_price_kept_24m"] == 5.0          # product 1 was returned in full
    assert c2["premium_margin_12m"] == 5.0          # product 1 nets zero, product 2 above market
    assert c2["preferred_channel"] == "phone"       # tie 1:1 -> alphabetically first
    assert (c2["recency_days"], c2["tenure_days"]) == (1, 2)
    assert c2["emails_sent_12m"] == 0 and c2["open_rate_12m"] is None
    assert (c2["share_toys"], c2["share_books"]) == (1.0, 0.0)

    c3 = _row(df, 3)  # e-mail only: no orders
    assert (c3["orders_total"], c3["net_revenue_lifetime"], c3["recency_days"]) == (0, 0.0, None)
    assert c3["max_price_kept_24m"] is None and c3["premium_margin_12m"] == 0.0
    assert (c3["emails_sent_12m"], c3["open_rate_12m"], c3["click_rate_12m"]) == (3, 2 / 3, 1 / 3)
    assert c3["preferred_channel"] is None and c3["top_category"] is None

    c4 = _row(df, 4)  # customers table only
    assert c4["orders_total"] == 0 and c4["emails_sent_12m"] == 0

    s = res.summary
    assert s["tables"]["orders"]["rejects_by_reason"] == {
        "customer_id is null (guest order)": 1, "unit_price is negative": 1}
    assert s["order_lines_after_as_of"] == 1
    assert res.skipped == {}


def test_feature_schema_is_a_contract(full):
    df = run_features(load_config(data=full, as_of=AS_OF)).features
    assert df.schema["recency_days"] == pl.Int32
    assert df.schema["orders_12m"] == pl.Int32
    assert df.schema["net_revenue_12m"] == pl.Float64
    assert df.schema["first_order_ts"] == pl.Datetime("us")
    assert df.schema["preferred_channel"] == pl.String


def test_missing_optional_tables_are_null_and_reported(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    _orders().drop("channel").write_parquet(d / "orders.parquet")
    res = run_features(load_config(data=d, as_of=AS_OF))
    df = res.features
    for col in ("premium_margin_12m", "emails_sent_12m", "open_rate_12m", "click_rate_12m", "preferred_channel"):
        assert df[col].null_count() == df.height, col
    assert not any(c.startswith("share_") for c in df.columns)
    assert set(res.skipped) == {"premium_margin_12m", "email", "preferred_channel", "category"}
    assert _row(df, 1)["orders_12m"] == 2


def test_default_as_of_is_day_after_newest_order(full):
    res = run_features(load_config(data=full))
    assert res.as_of == dt.date(2024, 7, 2)
    assert res.summary["order_lines_after_as_of"] == 0


def test_windows_are_configurable(full, tmp_path):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(f'data = "{full}"\nas_of = "{AS_OF}"\n[features]\nwindow_12m = 120\n')
    df = run_features(load_config(cfg_file)).features
    assert _row(df, 1)["orders_12m"] == 1  # only order A (2024-03-10) is within 120 days


def test_csv_with_mapping_expressions_filter_and_no_order_id(tmp_path):
    csv = tmp_path / "retail.csv"
    csv.write_text(
        "Customer ID,InvoiceDate,Sales,Qty,StockCode\n"
        "17850.0,2024-01-05 10:00,20.0,2,A\n"
        "17850.0,2024-01-05 16:00,5.0,1,B\n"      # same day: same order
        "17850.0,2024-02-01 09:00,7.0,1,A\n"
        "17850.0,2024-02-01 09:00,3.0,1,POST\n"   # postage: filtered out by the config
        "13047.0,2024-03-01 12:00,9.0,3,C\n"
    )
    emails = tmp_path / "email_events.csv"
    emails.write_text("customer_id,ts,event,campaign_id\n17850,2024-01-10,sent,1\n17850,2024-01-11,open,1\n")
    cfg = tmp_path / "centile.toml"
    cfg.write_text("""
as_of = "2024-06-01"
[tables.orders]
path = "retail.csv"
filter = "StockCode <> 'POST'"
[tables.orders.columns]
customer_id = "Customer ID"
order_ts = "InvoiceDate"
quantity = "Qty"
unit_price = "Sales / nullif(Qty, 0)"
product_id = "StockCode"
[tables.email_events]
path = "email_events.csv"
""")
    res = run_features(load_config(cfg))
    df = res.features
    # float ids (17850.0) in one file, integers in the other: one integer id
    assert df["customer_id"].to_list() == [13047, 17850]
    c = _row(df, 17850)
    assert (c["orders_total"], c["gross_revenue_lifetime"]) == (2, 32.0)
    assert c["open_rate_12m"] == 1.0
    assert _row(df, 13047)["gross_revenue_lifetime"] == pytest.approx(9.0)
    assert res.summary["tables"]["orders"]["rows_filtered_by_config"] == 1


def _dirty_csv(tmp_path):
    csv = tmp_path / "orders.csv"
    csv.write_text(
        "customer_id,order_id,order_ts,unit_price,quantity\n"
        "1,1,2024-01-01,10,1\n"
        "1,2,2021-13-01,10,1\n"     # unparsable timestamp
        ",3,2024-01-02,10,1\n"      # guest order
        "2,4,2024-01-03,abc,1\n"    # price not a number
        "2,5,2024-01-04,-2,1\n"     # negative price
        "2,6,2024-01-05,0,1\n"      # zero price is valid
    )
    return csv


def test_rejects_are_set_aside_with_reasons(tmp_path):
    csv = _dirty_csv(tmp_path)
    out = tmp_path / "out"
    res = run_features(load_config(data=tmp_path), out)
    assert res.summary["tables"]["orders"]["rejects_by_reason"] == {
        "order_ts is not a timestamp": 1, "customer_id is null (guest order)": 1,
        "unit_price is not a number": 1, "unit_price is negative": 1}
    rejects = pl.read_parquet(out / "rejects.parquet")
    assert rejects.height == 4
    bad_ts = rejects.filter(pl.col("reason") == "order_ts is not a timestamp").row(0, named=True)
    assert bad_ts["file"] == str(csv)
    assert json.loads(bad_ts["record"])["order_ts"] == "2021-13-01"
    assert _row(res.features, 2)["orders_total"] == 1  # the zero-price line counts as an order
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == {"features": 2, "rejects": 4}
    assert manifest["inputs"]["orders"][0]["bytes"] == csv.stat().st_size
    assert manifest["inputs"]["orders"][0]["fingerprint"].startswith("blake2b:")
    assert {"features", "write_features"} <= set(manifest["timings_s"])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_strict_fails_naming_file_column_and_value(tmp_path):
    _dirty_csv(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(ValidationError) as err:
        run_features(load_config(data=tmp_path, strict=True), out)
    msg = str(err.value)
    assert "orders: 4 invalid rows" in msg and "orders.csv" in msg
    assert not (out / "features.parquet").exists()


def test_failed_run_keeps_earlier_results(tmp_path, full):
    out = tmp_path / "out"
    run_features(load_config(data=full, as_of=AS_OF), out)
    before = (out / "features.parquet").read_bytes()
    _dirty_csv(tmp_path)
    with pytest.raises(ValidationError):
        run_features(load_config(data=tmp_path, strict=True), out)
    assert (out / "features.parquet").read_bytes() == before


def test_missing_column_names_file_and_suggests(tmp_path):
    pl.DataFrame({"customer_id": [1], "order_ts": [D(2024, 1, 1)], "Price": [1.0]}).write_parquet(
        tmp_path / "orders.parquet")
    with pytest.raises(InputError) as err:
        run_features(load_config(data=tmp_path))
    msg = str(err.value)
    assert "required column `unit_price`" in msg and "orders.parquet" in msg and "Price" in msg
    assert "[tables.orders.columns]" in msg


def test_wrong_type_is_a_clear_error(tmp_path):
    pl.DataFrame({"customer_id": [1], "order_ts": [20240101], "unit_price": [1.0]}).write_parquet(
        tmp_path / "orders.parquet")
    with pytest.raises(InputError, match="column `order_ts` has type BIGINT"):
        run_features(load_config(data=tmp_path))


def test_bad_filter_and_expression_are_config_errors(tmp_path):
    _orders().write_parquet(tmp_path / "orders.parquet")
    cfg = tmp_path / "c.toml"
    cfg.write_text('data = "."\n[tables.orders]\nfilter = "nosuchcol > 1"\n')
    with pytest.raises(ConfigError, match="filter"):
        run_features(load_config(cfg))
    cfg.write_text('data = "."\n[tables.orders.columns]\nunit_price = "nosuch * 2"\n')
    with pytest.raises(ConfigError, match="unit_price"):
        run_features(load_config(cfg))


def test_no_orders_table_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no orders table"):
        load_config(data=tmp_path)


def test_duplicate_product_keys_are_rejected(full):
    pl.concat([_products(), _products().head(1)]).write_parquet(full / "products.parquet")
    res = run_features(load_config(data=full, as_of=AS_OF))
    assert res.summary["tables"]["products"]["rejects_by_reason"] == {"duplicate product_id": 2}
    # product 1 lost its market price: customer 1's premium margin keeps only the book lines
    assert _row(res.features, 1)["premium_margin_12m"] == pytest.approx(0.0)
    assert not math.isnan(_row(res.features, 1)["net_revenue_12m"])


def test_hive_partitioned_folder(tmp_path):
    d = tmp_path / "data"
    (d / "orders" / "year=2023").mkdir(parents=True)
    (d / "orders" / "year=2024").mkdir(parents=True)
    o = _orders().filter(pl.col("customer_id").is_not_null() & (pl.col("unit_price") >= 0))
    o.filter(pl.col("order_ts").dt.year() == 2023).drop("channel").write_parquet(d / "orders/year=2023/p.parquet")
    o.filter(pl.col("order_ts").dt.year() == 2024).drop("channel").write_parquet(d / "orders/year=2024/p.parquet")
    df = run_features(load_config(data=d, as_of=AS_OF)).features
    assert _row(df, 1)["orders_total"] == 3


def test_text_ids_keep_zero_padding_and_drop_float_suffix(tmp_path):
    pl.DataFrame({"customer_id": ["00123", "17850.0", "17850", " 42 "],
                  "order_ts": [D(2024, 1, 1), D(2024, 1, 2), D(2024, 1, 3), D(2024, 1, 4)],
                  "unit_price": [1.0, 2.0, 3.0, 4.0]}).write_parquet(tmp_path / "orders.parquet")
    pl.DataFrame({"customer_id": [17850.0], "ts": [D(2024, 1, 4)], "event": ["sent"],
                  "campaign_id": [1]}).write_parquet(tmp_path / "email_events.parquet")
    df = run_features(load_config(data=tmp_path)).features
    assert df["customer_id"].to_list() == ["00123", "17850", "42"]
    c = _row(df, "17850")
    assert (c["orders_total"], c["emails_sent_12m"]) == (2, 1)


@given(st.lists(st.one_of(st.none(), st.integers(0, 30)), max_size=40),
       st.lists(st.integers(0, 30), max_size=40))
@settings(max_examples=60, deadline=None)
def test_add_columns_is_a_left_join_that_keeps_the_left_columns(left_ids, right_ids):
    import polars as pl

    from centile.features.join import add_columns

    left = pl.DataFrame({"customer_id": left_ids, "a": list(range(len(left_ids)))},
                        schema={"customer_id": pl.Int64, "a": pl.Int64})
    right = pl.DataFrame({"customer_id": right_ids, "b": [str(i) for i in right_ids], "a": right_ids},
                         schema={"customer_id": pl.Int32, "b": pl.String, "a": pl.Int64})
    want = left.join(right.with_columns(pl.col("customer_id").cast(pl.Int64)), on="customer_id", how="left",
                     maintain_order="left")
    assert add_columns(left, right).equals(want, null_equal=True)
