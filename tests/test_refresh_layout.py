"""The refresh state's line hashes: sorted runs searched, not scanned (centile.refresh.hashes), and
the Parquet runs of states written before."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from centile.refresh import hashes as lh


def test_hash_runs_are_sorted_one_row_per_hash_and_day_and_pruned(tmp_path):
    rng = np.random.default_rng(7)
    h = rng.integers(0, 2**64 - 1, 5000, dtype=np.uint64, endpoint=True)
    day = rng.integers(19000, 19040, 5000).astype(np.int32)
    n = lh.write_run(tmp_path / "a.arrow", np.concatenate([h, h[:100]]), np.concatenate([day, day[:100]]))
    got, got_day, ordered = lh.read_run(tmp_path / "a.arrow")
    assert ordered and n == 5000 and np.all(got[1:] >= got[:-1])
    assert sorted(zip(got.tolist(), got_day.tolist(), strict=True)) == sorted(zip(h.tolist(), day.tolist(),
                                                                                  strict=True))
    probe = np.concatenate([h[::7], np.array([0, 2**64 - 1, 12345], dtype=np.uint64)])
    want = np.isin(probe, h)
    assert np.array_equal(np.sort(lh.seen([tmp_path / "a.arrow"], probe)), np.sort(probe[want]))
    # a Parquet run of a state written before (customer_id, h, day; unsorted) is read as it is
    old = rng.integers(0, 2**63, 300, dtype=np.uint64)
    pq.write_table(pa.table({"customer_id": pa.array(np.arange(300)), "h": pa.array(old, pa.uint64()),
                             "day": pa.array(np.full(300, 19050, np.int32)).cast(pa.date32())}),
                   tmp_path / "old.parquet")
    assert set(lh.seen([tmp_path / "a.arrow", tmp_path / "old.parquet"], np.concatenate([old[:5], h[:5]])).tolist()
               ) == set(old[:5].tolist()) | set(h[:5].tolist())
    # merged with the days before the cutoff pruned
    cut = dt.date(1970, 1, 1) + dt.timedelta(days=19020)
    n = lh.write_run(tmp_path / "m.arrow", np.array([1, 2], np.uint64), np.array([19045, 19001], np.int32),
                     [tmp_path / "a.arrow", tmp_path / "old.parquet"], cut)
    mh, md, _ = lh.read_run(tmp_path / "m.arrow")
    assert n == int((day >= 19020).sum()) + 300 + 1 and md.min() >= 19020 and np.all(mh[1:] >= mh[:-1])
    assert 1 in mh and 2 not in mh
