"""``PerCustomer`` frame arguments: on a cluster each partition's task gets only its customers' rows
(:func:`centile.backend.partitions.split_by_partition`), the rows the partition predicate selects in
the validated tables."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from centile.backend.partitions import Partitioning, PerCustomer, plain, split_by_partition


@pytest.mark.parametrize(("ids", "sql_type"), [
    (pl.Series("customer_id", [7, 3, 10**12, -5, 3, 42, 99, 1_000_003] * 50, dtype=pl.Int64), "BIGINT"),
    (pl.Series("customer_id", [f"c{i % 61}" for i in range(400)]), "VARCHAR"),
])
def test_split_matches_the_partition_predicate_and_keeps_row_order(ids, sql_type):
    frame = pl.DataFrame({"customer_id": ids, "row": range(ids.len())})
    parts = Partitioning(7)
    slices = split_by_partition(frame, parts, sql_type)
    assert len(slices) == 7 and sum(s.height for s in slices) == frame.height
    con = duckdb.connect()
    con.register("f", frame)
    for p, sl in enumerate(slices):
        want = con.sql(f"SELECT row FROM (SELECT CAST(customer_id AS {sql_type}) AS customer_id, row FROM f) "
                       f"WHERE {parts.predicate(p)} ORDER BY row").pl()["row"]
        assert sl["row"].to_list() == want.to_list()  # the predicate's rows, in the frame's order
    assert sum(1 for s in slices if s.height) > 1


def test_ids_not_of_the_id_type_go_to_partition_zero_and_one_partition_is_the_frame():
    frame = pl.DataFrame({"customer_id": ["12", "x", "7"]})
    slices = split_by_partition(frame, Partitioning(4), "BIGINT")
    assert "x" in slices[0]["customer_id"].to_list()
    assert split_by_partition(frame, Partitioning(1), "BIGINT")[0] is frame
    assert plain((1, PerCustomer(frame), None)) == (1, frame, None)


@pytest.mark.parametrize("ids", [
    pl.Series("customer_id", [(i * 7919) % 10_007 for i in range(600)], dtype=pl.Int64),
    pl.Series("customer_id", [f"c{(i * 31) % 997}" for i in range(600)]),
])
def test_rows_the_workers_kept_give_each_task_the_slice_the_client_would_have_sent(ids, tmp_path):
    """``PerCustomer(frame, kept)``: a task puts its partition's rows together from the kept rows'
    file (the feature tasks' own rows, sorted by customer_id) and the columns the client sends, and
    gets the frame :func:`split_by_partition` cuts from the client's frame, rows, order and types."""
    from centile.backend import worker
    from centile.backend.partitions import Kept, sorted_rows, stack_rows

    sql_type = "BIGINT" if ids.dtype == pl.Int64 else "VARCHAR"
    parts = Partitioning(5)
    rows = pl.DataFrame({"customer_id": ids, "x": [i * 0.5 if i % 9 else None for i in range(ids.len())],
                         "top": [f"t{i % 4}" for i in range(ids.len())]})
    # each partition's task returns its rows in the order its query made them; sorted there, kept in a file
    files = []
    for p, part in enumerate(split_by_partition(rows.reverse(), parts, sql_type)):
        part = sorted_rows(None, p, lambda _v, _p, f: f, part)
        files.append(worker._offload(part, tmp_path, f"features-{p:05d}"))
    features, order = stack_rows([pl.read_ipc(f.path) for f in files])
    assert features.equals(rows.sort("customer_id"))
    kept = Kept(parts, tuple(f.path for f in files), tuple(f.rows for f in files), tuple(features.columns),
                order, features.get_column("customer_id"))
    # a later step's frame: the feature rows with a column of the client's own and the rows' positions
    frame = features.with_columns(label=pl.col("x").fill_null(0) > 100).select("label", "customer_id", "x") \
        .with_row_index("__row")
    assert kept.serves(frame, parts) and not kept.serves(frame, Partitioning(4))
    assert not kept.serves(frame.reverse(), parts) and not kept.serves(frame.head(10), parts)
    (tmp_path / "in").mkdir()
    handed, sent = worker.from_kept(frame, kept, tmp_path / "in", "0-")
    assert 0 < sent < frame.select("__row", "label").estimated_size() * 1.1 < frame.estimated_size() / 2
    for p, want in enumerate(split_by_partition(frame, parts, sql_type)):
        got = worker.read_inputs((handed[p],))[0]
        assert handed[p].kept == ("customer_id", "x")
        assert got.schema == want.schema and got.equals(want, null_equal=True), p
    # a column named like a kept one that the frame replaced is sent, not read from the kept rows
    frame = frame.with_columns(x=pl.lit(1.0))
    handed, _sent = worker.from_kept(frame, kept.without(["x"]), tmp_path / "in", "1-")
    for p, want in enumerate(split_by_partition(frame, parts, sql_type)):
        assert worker.read_inputs((handed[p],))[0].equals(want, null_equal=True), p


def test_frames_handed_to_tasks_send_few_distinct_strings_as_dictionaries_and_read_back_the_same(tmp_path):
    from centile.backend import worker

    n = 400
    frame = pl.DataFrame({
        "customer_id": [f"id-{i}" for i in range(n)],               # distinct: sent as it is
        "segment": [["Champions", "", None, "Ünïcode ✓"][i % 4] for i in range(n)],
        "region": pl.Series([None] * n, dtype=pl.String),           # no value at all
        "__row": pl.Series(range(n), dtype=pl.UInt32),
    })
    handed = worker.hand_over(frame, tmp_path / "f.arrow")
    assert handed.coded == ("segment", "region")
    back = worker.read_inputs((handed, 3))
    assert back[1] == 3 and back[0].equals(frame, null_equal=True) and back[0].schema == frame.schema
    assert handed.nbytes < frame.estimated_size()
    # a few rows (under 64) or many distinct values: plain strings
    small = worker.hand_over(frame.head(10), tmp_path / "g.arrow")
    assert small.coded == () and small.read().equals(frame.head(10), null_equal=True)
    # a kept partition's sent columns read back as String too
    kept = worker.KeptRows(str(tmp_path / "f.arrow"), n, ("customer_id", "segment"), ("customer_id",), handed)
    assert kept.read().equals(frame.select("customer_id", "segment"), null_equal=True)
