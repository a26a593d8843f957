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
