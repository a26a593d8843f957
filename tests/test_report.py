"""report.html: self-contained, renders in headless Chromium without errors or network,
and shows the numbers of the Parquet outputs."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import polars as pl
import pytest

from centile.config import load_config
from centile.errors import ConfigError
from centile.report import kpi_table, render_report
from centile.run import run_pipeline

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from centile.synth import generate

    base = tmp_path_factory.mktemp("report")
    generate(base / "data", 3000, seed=3)
    cfg = base / "centile.toml"
    cfg.write_text(f'data = "{base / "data"}"\n[report.targets]\navg_order_value_12m = 60\n'
                   "return_rate_12m = 0.15\n")
    run_pipeline(load_config(cfg), base / "out")
    return base / "out"


def test_report_is_self_contained(run_dir):
    page = (run_dir / "report.html").read_text()
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "the report references the network"
    assert "@import" not in page and not re.search(r"url\((?!#)", page), "only in-page url(#id) references"
    assert page.count("<svg") >= 1
    for section in ("data", "kpis", "clubs", "rfm", "segments", "clv", "uplift"):
        assert f'<section id="{section}"' in page


def test_uplift_section_shows_one_interval_per_outcome(run_dir):
    from centile.uplift import PREFERRED_METHODS, preferred_rows

    page = (run_dir / "report.html").read_text()
    u = pl.read_parquet(run_dir / "uplift.parquet")
    overall = preferred_rows(u).filter(pl.col("breakdown") == "overall")
    # one row per campaign, arm and outcome, with the first available method
    assert overall.height == u.filter(pl.col("breakdown") == "overall").select(
        "campaign", "arm", "outcome").n_unique()
    for r in overall.iter_rows(named=True):
        have = set(u.filter(pl.col("breakdown") == "overall", pl.col("campaign") == r["campaign"],
                            pl.col("outcome") == r["outcome"])["method"])
        assert r["method"] == next(m for m in PREFERRED_METHODS if m in have)
    body = page.split('id="uplift-overall"')[1].split("</table>")[0]
    assert body.count("<tr>") == overall.height + 1  # header row
    assert 'id="srm-flags"' in page


def test_kpi_table_matches_a_direct_computation(run_dir):
    f = pl.read_parquet(run_dir / "features.parquet")
    clubs = pl.read_parquet(run_dir / "clubs.parquet").select("customer_id", "club")
    kt = kpi_table(f, clubs, "club")
    everyone = kt.filter(pl.col("segment") == "all customers").row(0, named=True)
    assert everyone["n"] == f.height
    assert everyone["net_revenue_12m"] == pytest.approx(f["net_revenue_12m"].mean())
    sd = f["net_revenue_12m"].std()
    assert everyone["net_revenue_12m_ci_high"] - everyone["net_revenue_12m"] == pytest.approx(
        1.959964 * sd / f.height ** 0.5)
    champs = f.join(clubs.filter(pl.col("club") == "frequency_champions"), on="customer_id")
    row = kt.filter(pl.col("segment") == "frequency_champions").row(0, named=True)
    assert row["n"] == champs.height and row["orders_12m"] == pytest.approx(champs["orders_12m"].mean())


def test_unknown_target_is_a_config_error(run_dir, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'data = "{run_dir.parent / "data"}"\n[report.targets]\nprofit = 3\n')
    with pytest.raises(ConfigError, match="profit"):
        render_report(run_dir, load_config(cfg))


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_renders_in_headless_chromium(run_dir):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no Chromium on this machine: install the Debian package `chromium` (.ci/run does) "
                    "to run the browser test of report.html")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the Python driver) is not installed")
    errors: list[str] = []
    requests: list[str] = []
    url = (run_dir / "report.html").resolve().as_uri()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url, wait_until="load")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)

            assert errors == [], f"console errors: {errors}"
            assert requests == [url], f"the report made requests besides loading itself: {requests}"
            for section in ("data", "kpis", "clubs", "rfm", "segments", "clv", "uplift"):
                assert page.locator(f"section#{section}").count() == 1, section
                assert page.locator(f"section#{section}").is_visible()

            manifest = json.loads((run_dir / "manifest.json").read_text())
            assert page.locator('[data-k="as_of"]').inner_text() == manifest["as_of"]
            newest = manifest["summary"]["inputs"]["tables"]["orders"]["date_max"][:19]
            assert page.locator('[data-k="newest_order"]').inner_text() == newest

            # every club row of the page carries the numbers of club_summary.parquet
            summary = pl.read_parquet(run_dir / "club_summary.parquet")
            rows = page.locator("#club-table tbody tr")
            assert rows.count() == summary.height
            for i, expected in enumerate(summary.iter_rows(named=True)):
                cells = rows.nth(i).locator("td")
                got = {cells.nth(j).get_attribute("data-col"): cells.nth(j).get_attribute("data-value")
                       for j in range(cells.count())}
                assert got["club"] == expected["club"]
                assert int(got["size"]) == expected["size"]
                assert float(got["threshold"]) == pytest.approx(expected["threshold"])
                assert float(got["revenue_share_12m"]) == pytest.approx(expected["revenue_share_12m"])

            # KPI tiles: one per club plus "all customers" and "no club", with the target verdicts
            tiles = page.locator(".tile")
            clubs = pl.read_parquet(run_dir / "clubs.parquet")
            assert tiles.count() == clubs["club"].n_unique() + 2
            everyone = page.locator('.tile[data-segment="all customers"]')
            assert "3,000 customers" in everyone.inner_text()
            assert "target" in everyone.inner_text()
            def cells(table_id: str) -> list[dict[str, str]]:
                return page.evaluate(
                    "id => [...document.querySelectorAll('#' + id + ' tbody tr')].map(tr => Object.fromEntries("
                    "[...tr.querySelectorAll('td')].map(td => [td.dataset.col, td.dataset.value])))", table_id)

            # RFM segments: customers per segment as in segment_profiles.parquet
            prof = pl.read_parquet(run_dir / "segment_profiles.parquet").filter(
                pl.col("segmentation") == "rfm_segment", pl.col("segment") != "all customers")
            got = {r["segment"]: int(r["customers"]) for r in cells("rfm-segments")}
            assert got == dict(zip(prof["segment"].cast(pl.String), prof["customers"], strict=True))

            # customer value: the fitted parameters of clv_model.json, with their standard errors
            model = json.loads((run_dir / "clv_model.json").read_text())
            rows = cells("clv-models")
            assert [r["model"] for r in rows] == [m["name"] for m in model["models"]]
            assert float(rows[0]["log_likelihood"]) == pytest.approx(model["models"][0]["loglik"])
            totals = cells("clv-totals")[0]
            assert float(totals["total"]) == pytest.approx(pl.read_parquet(run_dir / "clv.parquet")["clv"].sum())

            # uplift: every overall row's estimate and interval as in uplift.parquet
            from centile.uplift import preferred_rows

            want = preferred_rows(pl.read_parquet(run_dir / "uplift.parquet")).filter(pl.col("breakdown") == "overall")
            rows = cells("uplift-overall")
            assert len(rows) == want.height
            for r, w in zip(rows, want.iter_rows(named=True), strict=True):
                assert (r["campaign"], r["arm"], r["outcome"], r["method"]) == (
                    w["campaign"], w["arm"], w["outcome"], w["method"])
                assert float(r["uplift"]) == pytest.approx(w["uplift"])
                assert float(r["uplift_ci_low"]) == pytest.approx(w["uplift_ci_low"])
            assert page.locator("#srm-flags").count() == 1

            svg_w = page.evaluate("() => Math.max(...[...document.querySelectorAll('svg')].map(s => "
                                  "s.getBoundingClientRect().width))")
            assert svg_w > 200, "charts did not render"
        finally:
            browser.close()
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
    if os.environ.get("CI"):
        print(f"screenshot: {ARTIFACTS / 'report.png'}")
