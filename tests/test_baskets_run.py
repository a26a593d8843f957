"""The baskets and recommend stages inside ``centile run`` on small generated data."""

import polars as pl
import pytest

from centile.config import load_config
from centile.errors import ConfigError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from centile.synth import generate

    root = tmp_path_factory.mktemp("baskets")
    generate(root / "data", 1_500, seed=11)
    return root / "data"


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    from centile.run import run_pipeline

    root = tmp_path_factory.mktemp("baskets_run")
    cfg = root / "centile.toml"
    cfg.write_text(f'data = "{data}"\n[baskets]\nmin_count = 3\nsegment_by = ["club", "rfm_segment", "region"]\n'
                   '[recommend]\nk = 5\ncutoff = 2025-07-01\n')
    res = run_pipeline(load_config(cfg), root / "out")
    return res, root / "out", data, cfg


def test_stages_run_and_write_their_tables(run):
    res, out, _data, _cfg = run
    assert res.stages["baskets"]["status"] == "ran"
    assert res.stages["recommend"]["status"] == "ran"
    summary = pl.read_parquet(out / "basket_summary.parquet")
    assert set(summary["segment_by"]) == {"all", "club", "rfm_segment", "region"}
    overall = summary.filter(pl.col("segment_by") == "all")["n_baskets"].item()
    for col in ("club", "rfm_segment", "region"):
        assert summary.filter(pl.col("segment_by") == col)["n_baskets"].sum() == overall
    rules = pl.read_parquet(out / "basket_rules.parquet")
    assert rules.height > 0 and (rules["count_both"] >= 3).all()
    assert {"support", "confidence", "lift", "leverage", "conviction"} <= set(rules.columns)
    recs = pl.read_parquet(out / "recommendations.parquet")
    assert recs["rank"].max() == 5
    ev = pl.read_parquet(out / "recommendation_eval.parquet")
    assert ev.height == 4 and set(ev["model"]) == {"centile", "popularity"}
    html = (out / "report.html").read_text()
    assert '<section id="baskets">' in html


def test_new_only_recommendations_exclude_every_bought_product(run):
    _res, out, data, _cfg = run
    orders = pl.read_parquet(data / "orders")
    recs = pl.read_parquet(out / "recommendations.parquet")
    bought = orders.select("customer_id", pl.col("product_id").alias("item")).unique()
    assert recs.join(bought, on=["customer_id", "item"]).height == 0


def test_rerun_reuses_and_one_thread_gives_same_bytes(run, tmp_path):
    from centile.run import run_pipeline

    res, out, _data, cfg = run
    files = ("basket_rules", "basket_itemsets", "basket_summary", "recommendations", "recommendation_eval")
    first = {f: (out / f"{f}.parquet").read_bytes() for f in files}
    again = run_pipeline(load_config(cfg), out)
    assert again.stages["baskets"]["status"] == "reused"
    assert (out / "basket_rules.parquet").read_bytes() == first["basket_rules"]
    one = run_pipeline(load_config(cfg, threads=1), tmp_path / "one", report=False)
    assert one.stages["baskets"]["status"] == "ran"
    for f in files:
        assert (tmp_path / "one" / f"{f}.parquet").read_bytes() == first[f], f


def test_orders_without_product_ids_skip_with_a_reason(data, tmp_path):
    from centile.run import run_pipeline

    d = tmp_path / "data"
    d.mkdir()
    pl.read_parquet(data / "orders").drop("product_id", "category").head(3000).write_parquet(d / "orders.parquet")
    res = run_pipeline(load_config(data=d), tmp_path / "out", report=False)
    assert res.stages["baskets"]["status"] == "skipped"
    assert "product_id" in res.stages["baskets"]["reason"]
    assert res.stages["recommend"]["status"] == "skipped"


def test_config_typos_fail_at_load(data, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(f'data = "{data}"\n[baskets]\nmin_suport = 0.01\n')
    with pytest.raises(ConfigError, match="did you mean 'min_support'"):
        load_config(bad)
    bad.write_text(f'data = "{data}"\n[recommend]\nsimilarity = "jaccard"\n')
    with pytest.raises(ConfigError, match="similarity"):
        load_config(bad)


def test_report_top_rules_are_read_a_batch_at_a_time(tmp_path, monkeypatch):
    """The report's top rules per segment, read in batches that cut segments apart, equal the first
    rows of every segment of the whole file."""
    import polars as pl

    from centile.baskets import report

    rows = []
    for seg_by, segs in (("all", ["all"]), ("club", ["a", "b", None]), ("rfm", ["x"])):
        for seg in segs:
            for i in range(7 if seg != "b" else 2):
                rows.append((seg_by, seg, i, None, i + 1, None, 10.0 - i, 0.1, 0.5, 3, 100))
    rules = pl.DataFrame(rows, schema=list(report._RULE_COLUMNS), orient="row")
    path = tmp_path / "basket_rules.parquet"
    rules.write_parquet(path)
    want = rules.with_columns(r=pl.int_range(pl.len()).over("segment_by", "segment")).filter(pl.col("r") < 3).drop("r")
    monkeypatch.setattr(report, "_BATCH_ROWS", 4)
    got = report._top_rules(path, 3)
    assert got.height == 3 * 4 + 2
    assert got.equals(want, null_equal=True)
