"""Issue 6 regression: a multi-arm test read from the contacts table (arms A, B and control),
not only treatment/control."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from centile.backend import open_session
from centile.config import load_config
from centile.uplift import uplift_from_session


def test_multi_arm_contacts_give_one_row_per_arm_near_the_planted_effects(tmp_path):
    rng = np.random.default_rng(6)
    n = 6000
    arms = rng.choice(["Control", "A", " b "], n)  # labels are normalised: lower case, trimmed
    pl.DataFrame({"customer_id": np.arange(n), "campaign_id": np.ones(n, dtype=np.int64),
                  "sent_ts": [dt.datetime(2024, 6, 1)] * n, "group": arms}).write_parquet(tmp_path / "contacts.parquet")
    p = np.select([arms == "A", arms == " b "], [0.2, 0.3], 0.1)
    buyers = np.flatnonzero(rng.random(n) < p)
    pl.concat([
        pl.DataFrame({"customer_id": buyers, "order_ts": [dt.datetime(2024, 6, 5)] * buyers.size,
                      "unit_price": np.full(buyers.size, 20.0)}),
        # everyone orders later, so as_of leaves the 14-day window complete
        pl.DataFrame({"customer_id": np.arange(n), "order_ts": [dt.datetime(2024, 8, 1)] * n,
                      "unit_price": np.full(n, 10.0)}),
    ]).write_parquet(tmp_path / "orders.parquet")
    cfg = load_config(data=tmp_path)
    with open_session(cfg) as s:
        assert s.summaries["contacts"].rejects == {}
        res = uplift_from_session(s, cfg, None)
    rows = res.uplift.filter(pl.col("outcome") == "response", pl.col("breakdown") == "overall",
                             pl.col("method") == "newcombe").sort("arm")
    assert rows["arm"].to_list() == ["a", "b"]
    for arm, truth in (("a", 0.1), ("b", 0.2)):
        r = rows.filter(pl.col("arm") == arm).row(0, named=True)
        assert r["uplift_ci_low"] < truth < r["uplift_ci_high"]
        assert r["n_control"] == int((arms == "Control").sum())
