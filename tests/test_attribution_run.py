"""Attribution inside ``centile run``, the ``centile attribution`` command and the report section."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
from typer.testing import CliRunner

from centile.cli import app
from centile.config import load_config

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from centile.synth import generate

    root = tmp_path_factory.mktemp("attribution")
    generate(root / "data", 2_000, seed=5)
    return root / "data"


def test_attribution_stage_in_centile_run(data, tmp_path):
    from centile.run import run_pipeline

    cfg_file = tmp_path / "centile.toml"
    cfg_file.write_text(f'data = "{data}"\n[attribution]\nmarkov_orders = [1, 2]\nlookback_days = 14\n')
    res = run_pipeline(load_config(cfg_file), tmp_path / "out")
    st = res.stages["attribution"]
    assert st["status"] == "ran", st
    out = tmp_path / "out"
    att = pl.read_parquet(out / "attribution.parquet")
    assert att.columns == ["model", "breakdown", "segment", "channel", "conversions", "value", "share"]
    assert {"first_touch", "time_decay", "shapley", "markov_1", "markov_2"} <= set(att["model"])
    assert {"overall", "club", "rfm_segment"} <= set(att["breakdown"])
    # every model shares out the same conversions in every segment
    tot = att.group_by("model", "breakdown", "segment").agg(pl.col("conversions").sum(), pl.col("share").sum())
    per_seg = tot.group_by("breakdown", "segment").agg(pl.col("conversions").min().alias("lo"),
                                                        pl.col("conversions").max().alias("hi"))
    assert (per_seg["hi"] - per_seg["lo"]).abs().max() < 1e-6
    assert (tot["share"] - 1).abs().max() < 1e-9
    rem = pl.read_parquet(out / "attribution_removal.parquet")
    assert set(rem["order"]) == {1, 2}
    tr = pl.read_parquet(out / "attribution_transitions.parquet")
    sums = tr.group_by("order", "from_state").agg(pl.col("probability").sum())
    assert (sums["probability"] - 1).abs().max() < 1e-9
    inc = pl.read_parquet(out / "attribution_incrementality.parquet")
    assert set(inc["channel"]) == {"email"} and set(inc["medium"]) == {"email"}
    html = (out / "report.html").read_text()
    assert '<section id="attribution">' in html and "Attribution beside incrementality" in html
    manifest = json.loads((out / "manifest.json").read_text())
    assert "attribution" in json.dumps(manifest)
    again = run_pipeline(load_config(cfg_file), tmp_path / "out")
    assert again.stages["attribution"]["status"] == "reused"


def test_attribution_stage_skips_without_touchpoints(data, tmp_path):
    from centile.run import run_pipeline

    d = tmp_path / "data"
    shutil.copytree(data, d, ignore=shutil.ignore_patterns("touchpoints*", "truth"))
    res = run_pipeline(load_config(data=d), tmp_path / "out")
    st = res.stages["attribution"]
    assert st["status"] == "skipped" and "no touchpoints table" in json.dumps(st)


def test_cli_attribution_touchpoints_and_path_table(data, tmp_path):
    r = runner.invoke(app, ["attribution", "--data", str(data), "--out", str(tmp_path / "a"), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["journeys"] > 0 and "markov_1" in doc["models"]
    assert (tmp_path / "a" / "attribution_removal.parquet").exists()
    r1 = runner.invoke(app, ["attribution", "--data", str(data), "--out", str(tmp_path / "a1"), "--threads", "1"])
    assert r1.exit_code == 0, r1.output
    for name in ("attribution", "attribution_removal", "attribution_transitions"):
        assert (tmp_path / "a1" / f"{name}.parquet").read_bytes() == (tmp_path / "a" / f"{name}.parquet").read_bytes()
    # the same journeys as a path table give the same attribution (time decay aside)
    paths = tmp_path / "paths.csv"
    from centile.attribution.compute import attribution_from_session, parse_settings
    from centile.backend.session import open_session

    with open_session(load_config(data=data), only=("orders", "touchpoints")) as s:
        from centile.attribution.journeys import journeys_from_session

        j = journeys_from_session(s, lookback_days=30)
        res = attribution_from_session(s, parse_settings({}), None, None)
    names = [" > ".join(j.channels[c] for c in j.channel[j.offsets[i]:j.offsets[i + 1]]) for i in range(j.n)]
    (pl.DataFrame({"path": names, "c": j.conv, "v": j.value, "n": j.null})
     .group_by("path").agg(pl.col("c").sum().alias("total_conversions"),
                           pl.col("v").sum().alias("total_conversion_value"), pl.col("n").sum().alias("total_null"))
     .sort("path").write_csv(paths))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'data = "{data}"\n[attribution]\npaths = "paths.csv"\n')
    r = runner.invoke(app, ["attribution", "-c", str(cfg), "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert "time decay needs touch timestamps" in r.stdout
    b = pl.read_parquet(tmp_path / "b" / "attribution.parquet").sort("model", "channel")
    a = res.attribution.filter(pl.col("model") != "time_decay").sort("model", "channel")
    assert b.select("model", "channel").equals(a.select("model", "channel"))
    assert (b["conversions"] - a["conversions"]).abs().max() < 1e-6
    assert ((b["value"] - a["value"]).abs() / (a["value"].abs() + 1)).max() < 1e-9


def test_cli_attribution_bad_config_exits_1(data, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'data = "{data}"\n[attribution]\nlookback = 3\n')
    r = runner.invoke(app, ["attribution", "-c", str(cfg), "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "did you mean 'lookback_days'" in r.output
    cfg.write_text(f'data = "{data}"\n[attribution]\npaths = "missing.csv"\n')
    r = runner.invoke(app, ["attribution", "-c", str(cfg), "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "no such file" in r.output
