"""``centile baskets`` (association rules per segment) and ``centile recommend`` (top-k per customer)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from centile.cli.app import (
    AsOfOpt,
    BackendOpt,
    ConfigOpt,
    DataOpt,
    JsonOpt,
    OutOpt,
    SchedulerOpt,
    StrictOpt,
    ThreadsOpt,
    WaitOpt,
    WaitTimeoutOpt,
    _config,
    _errors,
    _lock_wait,
    _print_json,
    _status,
    err_console,
    out_console,
)

SegmentsOpt = Annotated[Path | None, typer.Option(
    "--segments", help="Parquet/CSV with customer_id and segment columns (e.g. a run's segments.parquet, "
    "which holds club and rfm_segment).", show_default=False)]
LevelOpt = Annotated[str | None, typer.Option(
    "--level", help="product (default) or category.", show_default=False)]


def _f(v: Any, digits: int = 3) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else (
        "inf" if isinstance(v, float) and math.isinf(v) else f"{v:,.{digits}f}")


def print_baskets(console: Any, res: Any, *, limit: int = 15) -> None:
    """Rich tables: baskets and rules per segment; the top overall rules by lift; the notes."""
    import polars as pl
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"Baskets per segment ({res.level} level)", title_justify="left", padding=(0, 1),
              collapse_padding=True)
    for c in ("segment_by", "segment", "baskets", "excluded", "threshold", "items", "pairs", "rules"):
        t.add_column(c, justify="left" if c.startswith("segment") else "right", no_wrap=True)
    for r in res.summary.iter_rows(named=True):
        t.add_row(r["segment_by"], r["segment"], f"{r['n_baskets']:,}", f"{r['baskets_excluded']:,}",
                  f"{r['threshold']:,}", f"{r['frequent_items']:,}", f"{r['frequent_pairs']:,}", f"{r['rules']:,}")
    console.print(t)
    # the rules went to basket_rules.parquet a segment at a time: read the top overall ones back
    rules = res.rules.lazy() if res.rules is not None else pl.scan_parquet(f"{res.out}/basket_rules.parquet")
    top = rules.filter(pl.col("segment_by") == "all").head(limit).collect()
    t2 = Table(title=f"Top {limit} rules overall (every segment in basket_rules.parquet)", title_justify="left",
               padding=(0, 1), collapse_padding=True)
    for c in ("antecedent", "consequent", "baskets", "support", "confidence", "lift", "conviction"):
        t2.add_column(c, justify="left" if c in ("antecedent", "consequent") else "right", no_wrap=True)
    def side(a: Any, b: Any) -> str:
        return str(a) if b is None else f"{a} + {b}"
    for r in top.iter_rows(named=True):
        t2.add_row(side(r["antecedent"], r["antecedent_2"]), side(r["consequent"], r["consequent_2"]), f"{r['count_both']:,}", _f(r["support"], 4),
                   _f(r["confidence"]), _f(r["lift"], 2), _f(r["conviction"]))
    console.print(t2)
    for note in res.notes:
        console.print(f"Note: {escape(note)}", highlight=False)


def print_recommend(console: Any, res: Any) -> None:
    """Rich table: customers and sources of the recommendations; the evaluation against popularity."""
    import polars as pl
    from rich.markup import escape
    from rich.table import Table

    recs = res.recommendations
    src = recs.group_by("source").agg(pl.len().alias("rows")).sort("source")
    console.print(f"{recs['customer_id'].n_unique():,} customers, {recs.height:,} recommendations "
                  f"({', '.join(f'{r[0]}: {r[1]:,}' for r in src.iter_rows())})", highlight=False)
    if res.evaluation is not None:
        ev = res.evaluation
        k = ev["k"][0]
        t = Table(title=f"Time-split evaluation (fit before {ev['cutoff'][0]}, scored after)", title_justify="left",
                  padding=(0, 1), collapse_padding=True)
        for c in ("protocol", "model", "users", f"HitRate@{k}", f"Precision@{k}", f"Recall@{k}"):
            t.add_column(c, justify="left" if c in ("protocol", "model") else "right", no_wrap=True)
        for r in ev.iter_rows(named=True):
            t.add_row(r["protocol"], r["model"], f"{r['users']:,}", _f(r["hit_rate"], 4), _f(r["precision"], 4),
                      _f(r["recall"], 4))
        console.print(t)
    for note in res.notes:
        console.print(f"Note: {escape(note)}", highlight=False)


def _segment_list(value: str | None) -> list[str] | None:
    return None if value is None else [c.strip() for c in value.split(",") if c.strip()]


def register(app: typer.Typer) -> None:
    @app.command()
    def baskets(
        data: DataOpt = None, config: ConfigOpt = None, out: OutOpt = Path("centile-out"),
        segments: SegmentsOpt = None,
        segment_by: Annotated[str | None, typer.Option(
            "--segment-by", help="Comma-separated segment columns of --segments (default from [baskets], "
            "else club,rfm_segment).", show_default=False)] = None,
        level: LevelOpt = None,
        min_count: Annotated[int | None, typer.Option(
            "--min-count", help="Keep itemsets and rules held by at least this many baskets (default 5).",
            show_default=False)] = None,
        min_support: Annotated[float | None, typer.Option(
            "--min-support", help="Also require ceil(min_support x baskets of the segment) baskets.",
            show_default=False)] = None,
        min_confidence: Annotated[float | None, typer.Option(
            "--min-confidence", help="Keep rules with confidence at least this (exact rational comparison).",
            show_default=False)] = None,
        max_size: Annotated[int | None, typer.Option(
            "--max-size", help="Largest itemset: 2 (default) or 3.", show_default=False)] = None,
        all_splits: Annotated[bool | None, typer.Option(
            "--all-splits/--single-consequent", help="Every split of a 3-itemset into antecedent and "
            "consequent (as mlxtend), or only single-item consequents (default, as Spark MLlib and arules).",
            show_default=False)] = None,
        as_of: AsOfOpt = None, strict: StrictOpt = None, threads: ThreadsOpt = None,
        backend: BackendOpt = None, scheduler: SchedulerOpt = None, wait: WaitOpt = False, wait_timeout: WaitTimeoutOpt = None, json_: JsonOpt = False,
    ) -> None:
        """Association rules overall and per segment: exact item and pair counts, support, confidence,
        lift, leverage and conviction.

        Writes basket_itemsets.parquet, basket_rules.parquet and basket_summary.parquet.
        """
        from centile.baskets.compute import baskets_summary_doc
        from centile.baskets.job import run_baskets
        from centile.baskets.settings import basket_settings

        if data is None and config is None:
            err_console.print("Error: pass --data DIR or -c centile.toml")
            raise typer.Exit(1)
        with _errors(), _lock_wait(wait, wait_timeout):
            cfg = _config(config, data, as_of=as_of, strict=strict, threads=threads, backend=backend,
                          scheduler=scheduler)
            st = basket_settings(cfg, level=level, min_count=min_count, min_support=min_support,
                                 min_confidence=min_confidence, segment_by=_segment_list(segment_by),
                                 max_size=max_size, all_splits=all_splits)
            with _status("baskets") as progress:
                res = run_baskets(cfg, out, settings=st, segments=segments, progress=progress)
        if json_:
            _print_json({"out": str(res.out), **baskets_summary_doc(res)})
            return
        print_baskets(out_console, res)
        out_console.print(f"written to {res.out}/")

    @app.command()
    def recommend(
        data: DataOpt = None, config: ConfigOpt = None, out: OutOpt = Path("centile-out"),
        segments: SegmentsOpt = None,
        segment_by: Annotated[str | None, typer.Option(
            "--segment-by", help="Segment column of --segments whose popularity fills in for customers without "
            "history (default rfm_segment).", show_default=False)] = None,
        level: LevelOpt = None,
        k: Annotated[int | None, typer.Option("--k", "-k", help="Items per customer (default 10).",
                                              show_default=False)] = None,
        new_only: Annotated[bool | None, typer.Option(
            "--new-only/--with-repurchases", help="Only items the customer has not bought (default), or "
            "repurchases too (boosted by the customer's own history).", show_default=False)] = None,
        similarity: Annotated[str | None, typer.Option(
            "--similarity", help="Item-item score: cosine (default) or lift.", show_default=False)] = None,
        evaluate: Annotated[bool, typer.Option(
            "--evaluate", help="Also fit before --cutoff and score on the orders after it, against popularity "
            "(recommendation_eval.parquet).")] = False,
        cutoff: Annotated[str | None, typer.Option(
            "--cutoff", help="Evaluation cutoff YYYY-MM-DD (default from [recommend] cutoff).",
            show_default=False)] = None,
        as_of: AsOfOpt = None, strict: StrictOpt = None, threads: ThreadsOpt = None,
        backend: BackendOpt = None, scheduler: SchedulerOpt = None, wait: WaitOpt = False, wait_timeout: WaitTimeoutOpt = None, json_: JsonOpt = False,
    ) -> None:
        """Top-k products (or categories) per customer from co-occurrence with their recency-weighted
        history; segment popularity for customers without history.

        Writes recommendations.parquet (and recommendation_eval.parquet with --evaluate).
        """
        from centile.baskets.job import run_recommend
        from centile.baskets.recommend import recommend_summary_doc
        from centile.baskets.settings import recommend_settings
        from centile.errors import ConfigError

        if data is None and config is None:
            err_console.print("Error: pass --data DIR or -c centile.toml")
            raise typer.Exit(1)
        with _errors(), _lock_wait(wait, wait_timeout):
            cfg = _config(config, data, as_of=as_of, strict=strict, threads=threads, backend=backend,
                          scheduler=scheduler)
            st = recommend_settings(cfg, level=level, k=k, new_only=new_only, similarity=similarity,
                                    segment_by=segment_by, cutoff=cutoff)
            if evaluate and st.cutoff is None:
                raise ConfigError("--evaluate needs --cutoff YYYY-MM-DD (or [recommend] cutoff): the orders "
                                  "before it fit the model, the orders after it score it")
            with _status("recommend") as progress:
                res = run_recommend(cfg, out, settings=st, segments=segments,
                                    evaluate=st.cutoff if evaluate else None, progress=progress)
        if json_:
            _print_json({"out": str(res.out), **recommend_summary_doc(res)})
            return
        print_recommend(out_console, res)
        out_console.print(f"written to {res.out}/")
