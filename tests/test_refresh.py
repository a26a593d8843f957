"""Incremental refresh (issue 17): features from the state equal a full recompute, exactly."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from types import MappingProxyType

import polars as pl
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from centile.backend.session import open_session
from centile.config import Config, TableSpec, Windows
from centile.errors import ConfigError, InputError
from centile.features.compute import compute_features
from centile.refresh import features_from_state, ingest
from tests.refresh_baskets_checks import assert_basket_lines_equal

ORDER_SCHEMA = {"customer_id": pl.Int64, "order_id": pl.Utf8, "order_ts": pl.Datetime("us"),
                "unit_price": pl.Float64, "quantity": pl.Float64, "returned_quantity": pl.Float64,
                "product_id": pl.Int64, "category": pl.Utf8, "channel": pl.Utf8}
EMAIL_SCHEMA = {"customer_id": pl.Int64, "ts": pl.Datetime("us"), "event": pl.Utf8, "campaign_id": pl.Utf8}

#: small windows and lateness, so that a short stream prunes day buckets and has late rows
WINDOWS = Windows(3, 6, 10)
#: and runs merged every other ingest
REFRESH = MappingProxyType({"refresh": MappingProxyType({"lateness_days": 2, "partitions": 3, "max_runs": 2})})
#: around the leap day and the month ends of 2024
BASE = dt.datetime(2024, 2, 20)


PRODUCT_SCHEMA = {"product_id": pl.Int64, "market_price": pl.Float64, "unit_cost": pl.Float64, "category": pl.Utf8}


def products_file(folder: Path) -> Path:
    """Product 1 is premium above 2.0 with a cost, product 2 above 50 without one; 3 is never sold."""
    path = folder / "products.parquet"
    pl.DataFrame([(1, 2.0, 1.0, "x"), (2, 50.0, None, "y"), (3, 1.0, 0.5, None)], schema=PRODUCT_SCHEMA,
                 orient="row").write_parquet(path)
    return path


def _products(products: Path | None) -> dict[str, TableSpec]:
    return {"products": TableSpec("products", (str(products),), "parquet")} if products else {}


def state_cfg(products: Path | None = None, **kw) -> Config:
    return Config(tables=MappingProxyType(_products(products)), windows=WINDOWS, sections=REFRESH, **kw)


def full_features(orders: list[Path], emails: list[Path], as_of: dt.date, windows: Windows = WINDOWS,
                  products: Path | None = None) -> pl.DataFrame | None:
    tables = {"orders": TableSpec("orders", tuple(map(str, orders)), "parquet"), **_products(products)}
    if emails:
        tables["email_events"] = TableSpec("email_events", tuple(map(str, emails)), "parquet")
    cfg = Config(tables=MappingProxyType(tables), windows=windows, as_of=as_of)
    try:
        s = open_session(cfg)
    except InputError:  # no valid order line yet: the full path has no feature table
        return None
    with s:
        df, _, _ = compute_features(s)
    return df


def assert_clv_summary_equal(cfg: Config, state: Path, orders: list[Path], as_of: dt.date) -> None:
    """The CLV summary from the state's purchase days equals clv_summary.sql over all batches
    (with and without a holdout period), and so does the mean purchase-day value."""
    from centile.clv.compute import OrderDays, mean_value, summarize
    from centile.refresh.clv import state_days

    tables = {"orders": TableSpec("orders", tuple(map(str, orders)), "parquet")}
    try:
        s = open_session(Config(tables=MappingProxyType(tables), as_of=as_of))
    except InputError:  # no valid order line yet
        return
    with s:
        days = state_days(cfg, state)
        last = as_of - dt.timedelta(days=1)
        for cal, hold, unit in ((None, None, "week"), (last - dt.timedelta(days=3), last, "day")):
            try:
                want = summarize(s, cal, time_unit=unit, holdout_end=hold)
            except InputError as exc:  # nobody purchased before the calibration end
                with pytest.raises(InputError, match=str(exc)[:30]):
                    summarize(s, cal, time_unit=unit, holdout_end=hold, days=days)
                continue
            got = summarize(s, cal, time_unit=unit, holdout_end=hold, days=days)
            event(f"clv summary: repeat buyers {bool(want.frame['frequency'].sum())}, "
                  f"holdout transactions {bool(want.frame['holdout_transactions'].sum())}")
            assert_same(got.frame, want.frame)
            c = want.calibration_end
            assert days.value_total(c) == OrderDays(s).value_total(c)
            assert str(mean_value(days, c)) == str(mean_value(OrderDays(s), c))


def assert_inputs_equal(state: Path, orders: list[Path], emails: list[Path], products: Path | None) -> None:
    """The batch tables' rejected rows and validation summary kept by the state equal a session's over
    every batch file (duplicate lines within and across batches, rows rebuilt for late lines)."""
    from centile.refresh import rejects as rj
    from centile.refresh.state import read_manifest

    tables = {"orders": TableSpec("orders", tuple(map(str, orders)), "parquet"), **_products(products)}
    if emails:
        tables["email_events"] = TableSpec("email_events", tuple(map(str, emails)), "parquet")
    try:
        s = open_session(Config(tables=MappingProxyType(tables)))
    except InputError:  # no valid order line yet
        return
    doc = read_manifest(state)
    ledger = {"orders": orders, "email_events": emails}
    with s:
        want = s.con.sql("SELECT * FROM rejects WHERE \"table\" IN ('orders', 'email_events') ORDER BY ALL").fetchall()
        got = s.con.sql(f"SELECT * FROM ({rj.rejects_sql(doc, state, ledger)}) r ORDER BY ALL").fetchall()
        if currently_in_test_context():
            event(f"rejects: {len(want)}, duplicates: {sum(r[1] == 'duplicate line' for r in want)}")
        assert got == want
        kept = rj.summaries(s.con, doc, state, ledger)
        assert {t: v.as_dict() for t, v in kept.items()} == {t: s.summaries[t].as_dict() for t in kept}
        assert set(kept) == {"orders", *(["email_events"] if emails else [])}


CONTACT_SCHEMA = {"customer_id": pl.Int64, "campaign_id": pl.Int64, "sent_ts": pl.Datetime("us"),
                  "medium": pl.Utf8, "cost": pl.Float64, "group": pl.Utf8}


def contacts_file(folder: Path) -> Path:
    """Contacts of customers 1-5 every other day around the stream, at midnight or 13:00 (the hours of
    the stream's lines: an order at the very time of a contact, or at its window's end), in two
    media, some in control groups, some without a medium."""
    path = folder / "contacts.parquet"
    rows = [(1 + i % 5, i, BASE + dt.timedelta(days=2 * i - 40, hours=13 * (i % 2)),
             ("catalogue", "email", None)[i % 3], 1.0, ("treatment", "control", None)[i % 4 % 3])
            for i in range(80)]
    pl.DataFrame(rows, schema=CONTACT_SCHEMA, orient="row").write_parquet(path)
    return path


def assert_steering_history_equal(cfg: Config, state: Path, orders: list[Path], contacts: Path,
                                  as_of: dt.date) -> None:
    """The steering stage's relations from the state (spend, category spend, responses within a
    3-day window) equal the ones from the ``orders`` view over all batches."""
    from centile.refresh.steering import state_history
    from centile.steering.history import OrderHistory

    tables = {"orders": TableSpec("orders", tuple(map(str, orders)), "parquet"),
              "contacts": TableSpec("contacts", (str(contacts),), "parquet")}
    try:
        s = open_session(Config(tables=MappingProxyType(tables), as_of=as_of))
    except InputError:  # no valid order line yet
        return
    with s:
        lines, kept = OrderHistory(s), state_history(cfg, state, s)
        for name, keys in (("spend", ["customer_id"]), ("category_spend", ["customer_id", "category"])):
            want = getattr(lines, name)().sort(keys)
            assert_same(getattr(kept, name)().sort(keys), want)
            event(f"steering {name}: rows {bool(want.height)}, a negative sum {bool((want['revenue'] < 0).any())}")
        keys = ["customer_id", "medium", "control"]
        want = lines.responses(as_of, 3).sort(keys)
        assert_same(kept.responses(as_of, 3).sort(keys), want)
        event(f"steering responses: {bool(want['responses'].sum())}")


def contacts_and_touchpoints(folder: Path) -> dict[str, TableSpec]:
    """Contacts (two campaigns, treatment and control) and touchpoints of customers 1-5 around the
    stream's days, for the uplift units and attribution journeys."""
    cpath, tpath = folder / "uplift-contacts.parquet", folder / "touchpoints.parquet"
    pl.DataFrame([(c, k, BASE + dt.timedelta(days=d, hours=c), "control" if c % 2 else "treatment")
                  for c in range(1, 6) for k, d in (("k1", -3), ("k2", 10))],
                 schema={"customer_id": pl.Int64, "campaign_id": pl.Utf8, "sent_ts": pl.Datetime("us"),
                         "group": pl.Utf8}, orient="row").write_parquet(cpath)
    pl.DataFrame([(c, BASE + dt.timedelta(days=d, hours=c), ch) for c in range(1, 6)
                  for d, ch in ((-5, "mail"), (0, "search"), (4, "mail"), (9, "social"), (15, "search"), (30, "mail"))],
                 schema={"customer_id": pl.Int64, "ts": pl.Datetime("us"), "channel": pl.Utf8},
                 orient="row").write_parquet(tpath)
    return {"contacts": TableSpec("contacts", (str(cpath),), "parquet"),
            "touchpoints": TableSpec("touchpoints", (str(tpath),), "parquet")}


def assert_order_totals_equal(state: Path, orders: list[Path], as_of: dt.date, others: dict[str, TableSpec]) -> None:
    """The uplift's and attribution's rows per order from the state's order totals equal those over all
    batches (read whole, and per session partition with other bounds than the state's), and so do
    the uplift units and the attribution journeys computed from them."""
    from centile.attribution.journeys import journeys_from_session
    from centile.backend.partitions import Partitioning
    from centile.io.sqlfiles import read_sql
    from centile.refresh.order_totals import StateOrders
    from centile.refresh.state import read_manifest
    from centile.uplift.inputs import UpliftSpec, has_unit_cost, order_rows_sql, session_units

    tables = {"orders": TableSpec("orders", tuple(map(str, orders)), "parquet"), **others}
    try:
        s = open_session(Config(tables=MappingProxyType(tables), as_of=as_of))
    except InputError:  # no valid order line yet
        return
    with s:
        totals = StateOrders.of(state, read_manifest(state))
        keys = ["customer_id", "order_id"]
        want = s.frame(order_rows_sql(s, has_unit_cost(s))).sort(keys, nulls_last=True)
        want_conv = s.frame(read_sql("attribution_conversions")).sort(keys, nulls_last=True)
        for parts in (Partitioning(1), Partitioning(2)):
            got, got_conv = [], []
            for p in range(parts.count):
                with totals.registered(s, parts, p) as rows:
                    got.append(s.frame(rows))
                    got_conv.append(s.frame(totals.conversions_sql(rows)))
            assert_same(pl.concat(got).sort(keys, nulls_last=True), want)
            assert_same(pl.concat(got_conv).sort(keys, nulls_last=True), want_conv)
        if currently_in_test_context():
            event(f"order totals: a return-only order {bool((~want['is_order']).any())}, "
                  f"a NULL order id {want['order_id'].null_count() > 0}")
        spec = UpliftSpec(window_days=3, pre_window_days=5)
        with totals.registered(s, Partitioning(1), 0) as rows:
            assert_same(session_units(s, spec, None, [], rows, has_unit_cost(s)), session_units(s, spec, None, []))
        try:
            want_j = journeys_from_session(s, lookback_days=6)
        except InputError as exc:  # no touch in a lookback
            with pytest.raises(InputError, match=str(exc)[:30]):
                journeys_from_session(s, lookback_days=6, orders=totals)
            return
        got_j = journeys_from_session(s, lookback_days=6, orders=totals)
        for f in ("channels", "unattributed_conversions", "unattributed_value"):
            assert getattr(got_j, f) == getattr(want_j, f), f
        for f in ("offsets", "channel", "age_days", "conv", "null", "value"):
            assert getattr(got_j, f).tobytes() == getattr(want_j, f).tobytes(), f
        assert got_j.customer_id.equals(want_j.customer_id)


def assert_same(got: pl.DataFrame, want: pl.DataFrame) -> None:
    assert got.columns == want.columns
    assert got.dtypes == want.dtypes
    assert got.equals(want), f"state:\n{got}\nfull:\n{want}"


line = st.tuples(
    st.integers(1, 4),                                    # customer
    st.sampled_from(["o1", "o2", "o3"]),                  # order (orders span batches)
    st.integers(0, 14), st.sampled_from([0, 13]),         # day offset from the batch's day, hour
    st.sampled_from([0.0, 1.5, 2.25, 10.0, 99.99, -1.0]),  # unit price (negative: rejected)
    st.sampled_from([1.0, 2.0, 3.0, -1.0, -2.0]),         # quantity (negative: a return line)
    st.sampled_from([0.0, 0.0, 1.0]),                     # returned quantity
    st.sampled_from([1, 2, None]),                        # product
    st.sampled_from(["a", "b", None]),                    # category
    st.sampled_from(["web", "shop", None]),               # channel
)
email_event = st.tuples(st.integers(1, 5), st.integers(0, 14), st.sampled_from(["sent", "open", "click"]),
                  st.sampled_from(["c1", "c2", None]))
batch = st.tuples(
    st.integers(0, 12),                       # how many days the stream moves on before this batch
    st.lists(line, min_size=1, max_size=6),
    st.lists(email_event, max_size=3),
    st.integers(-1, 3),                       # >= 0: apply an earlier batch again instead
    st.booleans(),                            # a late batch: its lines 20 days back
    st.integers(-1, 3),                       # >= 0: also resend the lines of an earlier batch
)


def _write(folder: Path, i: int, day: dt.datetime, lines, events, late: bool, resend: list,
           no_category: bool = False) -> tuple[Path, Path, list]:
    back = dt.timedelta(days=20 if late else 0)
    rows = resend + [(c, o, day - back - dt.timedelta(days=d) + dt.timedelta(hours=h), p, q, min(r, max(q, 0)), pr, ca, ch)
            for c, o, d, h, p, q, r, pr, ca, ch in lines]
    ofile, efile = folder / f"orders-{i}.parquet", folder / f"email-{i}.parquet"
    df = pl.DataFrame(rows, schema=ORDER_SCHEMA, orient="row")
    (df.drop("category") if no_category else df).write_parquet(ofile)
    ev = [(c, day - dt.timedelta(days=d, hours=1), e, k) for c, d, e, k in events]
    pl.DataFrame(ev, schema=EMAIL_SCHEMA, orient="row").write_parquet(efile)
    return ofile, efile, rows


@settings(max_examples=20)
@given(st.lists(batch, min_size=1, max_size=5), st.sampled_from([0, 1, 9, 40]),
       st.sampled_from([(0.125, 16), (100.0, 2)]), st.sampled_from([None, "lines", "products"]))
def test_state_features_equal_full_recompute(tmp_path_factory, stream, k, deltas, products):
    # the feature cache as a base alone (the deltas' share of 1/8 is never reached with a few
    # customers), or as a base plus up to two deltas, folded into a new base at the third
    from unittest import mock

    import centile.refresh.features as refresh_features

    with mock.patch.multiple(refresh_features, DELTA_SHARE=deltas[0], MAX_DELTAS=deltas[1]):
        _stream_equals_full(tmp_path_factory, stream, k, products)


def _stream_equals_full(tmp_path_factory, stream, k, products: str | None) -> None:
    """``products``: None (no products table), "lines" (a products table, categories on the lines),
    "products" (categories from the products table: the lines have no category column)."""
    folder = tmp_path_factory.mktemp("stream")
    prod = products_file(folder) if products else None
    event(f"products: {products}")

    def state_cfg(**kw) -> Config:
        return globals()["state_cfg"](prod, **kw)

    def full_features(orders, emails, as_of) -> pl.DataFrame | None:
        return globals()["full_features"](orders, emails, as_of, products=prod)

    state = folder / "state"
    contacts = contacts_file(folder)
    contact_tables = contacts_and_touchpoints(folder)
    day = BASE
    batches: list[tuple[Path, Path | None]] = []
    sent: list[list] = []
    for i, (step, lines, events, again, late, copy) in enumerate(stream):
        if 0 <= again < len(batches):
            ofile, efile = batches[again]
            res = ingest(state_cfg(), state, [ofile], [efile] if efile else [])
            assert res.applied == [] and res.skipped  # applying a batch twice changes nothing
        else:
            day += dt.timedelta(days=step)
            resend = sent[copy] if 0 <= copy < len(sent) else []
            ofile, efile, rows = _write(folder, i, day, lines, events, late, resend, products == "products")
            sent.append(rows)
            res = ingest(state_cfg(), state, [ofile], [efile] if events else [])
            batches.append((ofile, efile if events else None))
            event(f"late rows rebuild partitions: {bool(res.rebuilt)}")
            event(f"a line applied in an earlier batch set aside: "
                  f"{res.rejects.get('orders', {}).get('duplicate line', 0) > 0}")
        orders = [o for o, _e in batches]
        emails = [e for _o, e in batches if e]
        try:
            wm = features_from_state(state_cfg(), state)[3]
        except InputError:
            continue  # nothing valid ingested yet
        assert_inputs_equal(state, orders, emails, prod)
        last = i == len(stream) - 1
        for as_of in sorted({wm, wm + dt.timedelta(days=k)}):
            want = full_features(orders, emails, as_of)
            if want is None:
                continue
            stats: dict[str, int] = {}
            got = features_from_state(state_cfg(as_of=as_of), state, stats=stats)[0]
            event(f"rows from the feature cache: {stats['cached'] > 0}")
            event(f"a premium margin: {bool(got['premium_margin_12m'].fill_null(0).abs().sum())}")
            event(f"cache deltas: {len(json.loads((state / 'cache.json').read_text()).get('deltas', []))}")
            assert_same(got, want)
            assert_clv_summary_equal(state_cfg(as_of=as_of), state, orders, as_of)
            if as_of == wm and k and not last:
                continue  # the slower stage tables: at watermark + k after every batch, at both at the end
            assert_steering_history_equal(state_cfg(as_of=as_of), state, orders, contacts, as_of)
            assert_order_totals_equal(state, orders, as_of, {**_products(prod), **contact_tables})
            # the rules and recommendations from either lines: at the end of the stream (they take long)
            assert_basket_lines_equal(state_cfg(as_of=as_of), state, orders, as_of, prod, outputs=last)


def _one_batch(folder: Path, name: str, rows: list, schema=ORDER_SCHEMA) -> Path:
    path = folder / name
    pl.DataFrame(rows, schema=schema, orient="row").write_parquet(path)
    return path


def test_rejects_and_counts_of_the_batches_equal_a_read_of_every_file(tmp_path):
    # a rejected line, a line twice in one batch, a line of an earlier batch sent again (set aside by
    # the line hashes: its record is read back), then a late batch that rebuilds partitions with a copy
    day = dt.datetime(2024, 3, 1, 9)
    kept = (1, "o1", day, 5.0, 1.0, 0.0, 1, "a", "web")
    other = (2, "o2", day, 7.5, 2.0, 0.0, 2, "b", "shop")
    batches = [
        _one_batch(tmp_path, "b1.parquet", [kept, other, other, (3, "o3", day, -1.0, 1.0, 0.0, 1, "a", "web")]),
        _one_batch(tmp_path, "b2.parquet", [kept, (4, "o4", day + dt.timedelta(days=5), 3.0, 1.0, 0.0, 1, "a", None)]),
        _one_batch(tmp_path, "b3.parquet", [other, kept, (1, "o5", day - dt.timedelta(days=30), 3.0, 1.0, 0.0, 1, "a", None)]),
    ]
    state = tmp_path / "state"
    dropped = []
    for i, b in enumerate(batches):
        res = ingest(state_cfg(), state, [b])
        dropped.append(res.rejects.get("orders", {}).get("duplicate line", 0))
        assert_inputs_equal(state, batches[:i + 1], [], None)
    # within b1; b2's copy of b1's line; b3's copy of it is in the partition its late line rebuilds
    assert dropped[:2] == [1, 1] and res.rebuilt
    doc = json.loads((state / "manifest.json").read_text())
    assert [f["file"] for f in doc["rejects"]] == ["rejects/000003-rebuilt.parquet"]
    assert sorted(p.name for p in (state / "rejects").iterdir()) == ["000003-rebuilt.parquet"]


def test_as_of_before_the_watermark_is_refused_and_full_recomputes(tmp_path):
    b = _one_batch(tmp_path, "b.parquet", [(1, "o1", dt.datetime(2024, 3, 1, 9), 5.0, 1.0, 0.0, 1, "a", "web"),
                                           (1, "o0", dt.datetime(2024, 2, 28, 9), 5.0, 1.0, 0.0, 1, "a", "web")])
    ingest(state_cfg(), tmp_path / "s", [b])
    with pytest.raises(InputError, match=r"as_of 2024-03-01 is before the refresh state's watermark 2024-03-02"):
        features_from_state(state_cfg(as_of=dt.date(2024, 3, 1)), tmp_path / "s")
    from centile.refresh import run_state_features

    res = run_state_features(state_cfg(as_of=dt.date(2024, 3, 1)), tmp_path / "s", full=True)
    want = full_features([b], [], dt.date(2024, 3, 1))
    assert_same(res.features, want)
    assert res.features["orders_total"].to_list() == [1]  # the line on as_of is outside every window


def test_a_customers_table_adds_its_customers_without_orders(tmp_path):
    b1 = _one_batch(tmp_path, "b1.parquet", [(1, "o1", dt.datetime(2024, 3, 1, 9), 5.0, 1.0, 0.0, 1, "a", "web")])
    b2 = _one_batch(tmp_path, "b2.parquet", [(9, "o2", dt.datetime(2024, 3, 2, 9), 6.0, 1.0, 0.0, 1, "a", "web")])
    cust = tmp_path / "customers.parquet"
    pl.DataFrame({"customer_id": [1, 7, 9]}).write_parquet(cust)
    cfg = state_cfg().with_(tables=MappingProxyType({"customers": TableSpec("customers", (str(cust),), "parquet")}))

    def full(orders: list[Path], as_of: dt.date) -> pl.DataFrame:
        tables = {"orders": TableSpec("orders", tuple(map(str, orders)), "parquet"), **cfg.tables}
        with open_session(Config(tables=MappingProxyType(tables), windows=WINDOWS, as_of=as_of)) as s:
            return compute_features(s)[0]

    ingest(cfg, tmp_path / "s", [b1])
    got = features_from_state(cfg, tmp_path / "s")[0]
    assert got["customer_id"].to_list() == [1, 7, 9]  # 7 and 9: in customers, no order line yet
    assert_same(got, full([b1], dt.date(2024, 3, 2)))
    ingest(cfg, tmp_path / "s", [b2])
    stats: dict[str, int] = {}
    assert_same(features_from_state(cfg, tmp_path / "s", stats=stats)[0], full([b1, b2], dt.date(2024, 3, 3)))
    assert stats == {"recomputed": 1, "cached": 2}
    pl.DataFrame({"customer_id": [1, 5]}).write_parquet(cust)  # another customers table: no cache
    assert_same(features_from_state(cfg, tmp_path / "s", stats=stats)[0], full([b1, b2], dt.date(2024, 3, 3)))
    assert stats == {"recomputed": 3, "cached": 0}


def test_a_products_table_other_than_the_states_is_refused(tmp_path):
    b = _one_batch(tmp_path, "b.parquet", [(1, "o1", dt.datetime(2024, 3, 1, 9), 5.0, 1.0, 0.0, 1, "a", "web")])
    prod = products_file(tmp_path)
    ingest(state_cfg(prod), tmp_path / "s", [b])
    assert features_from_state(state_cfg(prod), tmp_path / "s")[0]["premium_margin_12m"].to_list() == [4.0]
    with pytest.raises(ConfigError, match="was built with a products table; use the config that maps it"):
        features_from_state(state_cfg(), tmp_path / "s")
    pl.DataFrame([(1, 9.0, 1.0, "x")], schema=PRODUCT_SCHEMA, orient="row").write_parquet(prod)
    with pytest.raises(ConfigError, match="another products table .* rebuild the state into an empty folder"):
        ingest(state_cfg(prod), tmp_path / "s", [b])
    ingest(state_cfg(), tmp_path / "s2", [b])
    with pytest.raises(ConfigError, match="was built without a products table"):
        features_from_state(state_cfg(prod), tmp_path / "s2")


def test_a_batch_with_other_columns_is_refused(tmp_path):
    b = _one_batch(tmp_path, "b.parquet", [(1, "o1", dt.datetime(2024, 3, 1, 9), 5.0, 1.0, 0.0, 1, "a", "web")])
    ingest(state_cfg(), tmp_path / "s", [b])
    c = tmp_path / "c.parquet"
    pl.read_parquet(b).drop("channel").write_parquet(c)
    with pytest.raises(InputError, match=r"orders: batch .*c.parquet has the columns .* where earlier batches had"):
        ingest(state_cfg(), tmp_path / "s", [c])


def test_a_state_of_another_format_is_refused_with_how_to_rebuild_it(tmp_path):
    """Format 1 put customers into other hash buckets (``hash(id, seed)``): read as format 2, its
    partition files would hold the wrong customers. Ingest and features refuse it and say what to do."""
    b = _one_batch(tmp_path, "b.parquet", [(1, "o1", dt.datetime(2024, 3, 1, 9), 5.0, 1.0, 0.0, 1, "a", "web")])
    ingest(state_cfg(), tmp_path / "s", [b])
    path = tmp_path / "s" / "manifest.json"
    doc = json.loads(path.read_text())
    assert doc["version"] == 2
    path.write_text(json.dumps({**doc, "version": 1}))
    c = _one_batch(tmp_path, "c.parquet", [(2, "o2", dt.datetime(2024, 3, 2, 9), 5.0, 1.0, 0.0, 1, "a", "web")])
    for call in (lambda: ingest(state_cfg(), tmp_path / "s", [c]), lambda: features_from_state(state_cfg(), tmp_path / "s")):
        with pytest.raises(InputError, match=r"format version 1, this centile reads version 2; rebuild the state"):
            call()


def test_features_without_a_state_say_how_to_make_one(tmp_path):
    with pytest.raises(InputError, match=r"no refresh state with data in .*: run `centile ingest --state"):
        features_from_state(state_cfg(), tmp_path / "nothing")


def test_strict_refuses_a_batch_with_rejects_and_applies_nothing(tmp_path):
    from centile.errors import ValidationError

    b = _one_batch(tmp_path, "b.parquet", [(1, "o1", dt.datetime(2024, 3, 1, 9), -5.0, 1.0, 0.0, 1, "a", "web")])
    with pytest.raises(ValidationError, match=r"1 × unit_price is negative"):
        ingest(state_cfg(strict=True), tmp_path / "s", [b])
    assert not (tmp_path / "s" / "manifest.json").exists()


def test_cli_ingest_then_features_from_the_state(tmp_path):
    from typer.testing import CliRunner

    from centile.cli import app

    b1 = _one_batch(tmp_path, "day1.parquet", [(1, "o1", dt.datetime(2024, 2, 28, 9), 5.0, 2.0, 1.0, 1, "a", "web"),
                                               (2, "o2", dt.datetime(2024, 2, 29, 9), 7.5, 1.0, 0.0, 2, "b", "shop")])
    b2 = _one_batch(tmp_path, "day2.parquet", [(1, "o3", dt.datetime(2024, 3, 1, 9), 5.0, -1.0, 0.0, 1, "a", "web")])
    ev = _one_batch(tmp_path, "ev.parquet", [(3, dt.datetime(2024, 2, 29, 8), "sent", "c1")], EMAIL_SCHEMA)
    state, out = tmp_path / "state", tmp_path / "out"
    runner = CliRunner()
    r = runner.invoke(app, ["ingest", "--state", str(state), str(b1), "--email-events", str(ev), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rows_applied"] == {"orders": 2, "email_events": 1}
    r = runner.invoke(app, ["ingest", "--state", str(state), str(b2), str(b1)])
    assert r.exit_code == 0, r.output
    assert "1 batch file(s) applied, 1 already applied" in r.stdout
    r = runner.invoke(app, ["features", "--state", str(state), "--out", str(out)])
    assert r.exit_code == 0, r.output
    got = pl.read_parquet(out / "features.parquet")
    assert_same(got, full_features([b1, b2], [ev], dt.date(2024, 3, 2), Windows()))  # the CLI's default windows
    assert got["customer_id"].to_list() == [1, 2, 3]
    assert json.loads((out / "manifest.json").read_text())["as_of"] == "2024-03-02"
    r = runner.invoke(app, ["features", "--state", str(state), "--out", str(out), "--as-of", "2024-03-01"])
    assert r.exit_code == 1 and "before the refresh state's watermark 2024-03-02" in r.output


def test_cache_is_not_used_across_pruned_buckets_of_its_windows(tmp_path):
    # one partition, runs merged (and old day buckets pruned) at every second ingest
    cfg = Config(tables=MappingProxyType({}), windows=WINDOWS, sections=MappingProxyType(
        {"refresh": MappingProxyType({"lateness_days": 2, "partitions": 1, "max_runs": 1})}))
    # customer 1 only returned an item: no order, one day bucket
    b1 = _one_batch(tmp_path, "b1.parquet", [(1, "o1", dt.datetime(2024, 2, 1, 9), 5.0, -1.0, 0.0, 1, "a", "web")])
    b2 = _one_batch(tmp_path, "b2.parquet", [(2, "o2", dt.datetime(2024, 2, 20, 9), 7.0, 1.0, 0.0, 1, "a", "web")])
    ingest(cfg, tmp_path / "s", [b1])
    assert features_from_state(cfg, tmp_path / "s")[0]["returned_value_12m"].to_list() == [5.0]  # cached
    ingest(cfg, tmp_path / "s", [b2])  # prunes customer 1's day bucket: outside every window now
    stats: dict[str, int] = {}
    got = features_from_state(cfg, tmp_path / "s", stats=stats)[0]
    assert_same(got, full_features([b1, b2], [], dt.date(2024, 2, 21)))
    assert stats == {"recomputed": 2, "cached": 0}
    assert got["returned_value_12m"].to_list() == [0.0, 0.0]


def test_one_ingest_or_features_run_per_state_at_a_time(tmp_path):
    from centile.errors import OutputError
    from centile.refresh.state import state_lock

    b = _one_batch(tmp_path, "b.parquet", [(1, "o1", dt.datetime(2024, 3, 1, 9), 5.0, 1.0, 0.0, 1, "a", "web")])
    with state_lock(tmp_path / "s"):
        with pytest.raises(OutputError, match=r"refresh state .*s is in use by another centile ingest"):
            ingest(state_cfg(), tmp_path / "s", [b])
    assert ingest(state_cfg(), tmp_path / "s", [b]).applied


def test_an_email_only_batch(tmp_path):
    b = _one_batch(tmp_path, "b.parquet", [(1, "o1", dt.datetime(2024, 3, 1, 9), 5.0, 1.0, 0.0, 1, "a", "web")])
    e1 = _one_batch(tmp_path, "e1.parquet", [(2, dt.datetime(2024, 3, 2, 8), "sent", "c1"),
                                             (1, dt.datetime(2024, 3, 2, 9), "open", None)], EMAIL_SCHEMA)
    e2 = _one_batch(tmp_path, "e2.parquet", [(2, dt.datetime(2024, 3, 3, 8), "click", "c1")], EMAIL_SCHEMA)
    state = tmp_path / "s"
    ingest(state_cfg(), state, [b])
    features_from_state(state_cfg(), state)  # a cache without e-mail features
    res = ingest(state_cfg(), state, [], [e1])
    assert res.rows == {"orders": 0, "email_events": 2} and str(res.watermark) == "2024-03-03"
    assert_same(features_from_state(state_cfg(), state)[0], full_features([b], [e1], dt.date(2024, 3, 3)))
    ingest(state_cfg(), state, [], [e2])
    got = features_from_state(state_cfg(), state)[0]
    assert_same(got, full_features([b], [e1, e2], dt.date(2024, 3, 4)))
    assert got["click_rate_12m"].to_list() == [None, 1.0]


def test_feature_cache_deltas_are_read_newest_first_and_folded(tmp_path):
    from unittest import mock

    import centile.refresh.features as refresh_features

    state, orders = tmp_path / "s", []
    seen = []
    with mock.patch.multiple(refresh_features, DELTA_SHARE=100.0, MAX_DELTAS=2):
        for i in range(5):
            # customer 1 buys every day (its row is in every delta); customer 2 + i is new
            day = dt.datetime(2024, 3, 1 + i, 9)
            orders.append(_one_batch(tmp_path, f"b{i}.parquet", [
                (1, f"o{i}", day, 50.0 + i, 1.0, 0.0, 1, "a", "web"),
                (2 + i, f"p{i}", day, 7.0, 2.0, 1.0, 2, "b", "shop")]))
            ingest(state_cfg(), state, [orders[-1]])
            got = features_from_state(state_cfg(), state)[0]
            assert_same(got, full_features(orders, [], (day + dt.timedelta(days=1)).date()))
            seen.append(len(json.loads((state / "cache.json").read_text())["deltas"]))
    assert seen == [0, 1, 2, 0, 1]
    assert len(list((state / "cache").glob("*.arrow"))) == 2  # the base and one delta


def test_order_totals_with_null_order_ids_line_costs_and_later_returns(tmp_path):
    # lines with a unit cost of their own or their product's (products: 1 costs 1.0, 2 has none), a NULL
    # order id on two days in two batches (one order per customer, as GROUP BY makes it), a return of
    # an order in a later batch, a line resent later (set aside), a zero-quantity line
    schema = {**ORDER_SCHEMA, "unit_cost": pl.Float64}
    prod = products_file(tmp_path)
    d = dt.datetime(2024, 2, 27, 9)
    b1 = _one_batch(tmp_path, "b1.parquet", [
        (1, "o1", d, 10.0, 2.0, 1.0, 1, "a", "web", 4.0), (1, "o1", d, 3.0, 1.0, 0.0, 1, "a", "web", None),
        (1, None, d, 7.5, 1.0, 0.0, 2, "b", "shop", None), (2, "o2", d, 5.0, 0.0, 0.0, 2, "b", "web", 1.0)], schema)
    b2 = _one_batch(tmp_path, "b2.parquet", [
        (1, "o1", d + dt.timedelta(days=2), 10.0, -1.0, 0.0, 1, "a", "web", 4.0),
        (1, None, d + dt.timedelta(days=1), 2.5, 3.0, 1.0, None, None, "shop", 0.5),
        (1, "o1", d, 3.0, 1.0, 0.0, 1, "a", "web", None)], schema)  # the last: a line of b1 resent
    state, others = tmp_path / "s", {**_products(prod), **contacts_and_touchpoints(tmp_path)}
    ingest(state_cfg(prod), state, [b1])
    assert_order_totals_equal(state, [b1], dt.date(2024, 2, 28), others)
    res = ingest(state_cfg(prod), state, [b2])
    assert res.rejects["orders"] == {"duplicate line": 1}
    for as_of in (dt.date(2024, 3, 1), dt.date(2024, 3, 20)):
        assert_order_totals_equal(state, [b1, b2], as_of, others)
    with open_session(Config(tables=MappingProxyType({"orders": TableSpec("orders", (str(b1), str(b2)), "parquet"),
                                                      **others}), as_of=dt.date(2024, 3, 1))) as s:
        from centile.uplift.inputs import order_rows_sql

        rows = s.frame(order_rows_sql(s, True)).sort("order_id", nulls_last=True)
    # o1: 2 x 10 less 1 returned, 3, a return of 10 two days later; the NULL order: 7.5 and 2 x 2.5
    assert [str(v) for v in rows["revenue"]] == ["3.0000", "0.0000", "12.5000"]
    # costs: o1 4, 1 (its product's), 4; the NULL order none (product 2 has none), then 0.5
    assert [str(v) for v in rows["margin"]] == ["2.0000", "0.0000", "11.5000"]
    assert rows["is_order"].to_list() == [True, False, True] and rows["ts"][2] == d


def test_order_totals_keep_integer_order_ids_as_integers(tmp_path):
    # attribution numbers a customer's orders by (first line time, order id): orders 9 and 10 at the
    # same instant must sort as numbers, as over the lines (as text, "10" would come first)
    schema = {**ORDER_SCHEMA, "order_id": pl.Int64}
    d = dt.datetime(2024, 2, 21, 9)
    b1 = _one_batch(tmp_path, "b1.parquet", [(1, 9, d, 5.0, 1.0, 0.0, 1, "a", "web"),
                                             (1, 10, d, 50.0, 1.0, 0.0, 1, "a", "web")], schema)
    b2 = _one_batch(tmp_path, "b2.parquet", [(1, 10, d + dt.timedelta(days=1), 50.0, -1.0, 0.0, 1, "a", "web")], schema)
    state, others = tmp_path / "s", contacts_and_touchpoints(tmp_path)
    ingest(state_cfg(), state, [b1])
    assert_order_totals_equal(state, [b1], dt.date(2024, 2, 22), others)
    with pytest.raises(InputError, match=r"order ids are VARCHAR where the state's are BIGINT"):
        ingest(state_cfg(), state, [_one_batch(tmp_path, "b3.parquet", [(2, "x", d, 1.0, 1.0, 0.0, 1, "a", "web")])])
    ingest(state_cfg(), state, [b2])
    assert_order_totals_equal(state, [b1, b2], dt.date(2024, 2, 23), others)
