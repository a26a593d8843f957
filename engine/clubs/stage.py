"""``centile run`` stage of the clubs: ranks and overlap-free clubs over the features (and the
``clv_*`` predictions when CLV ran); club stability against ``--previous``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from centile.clubs.compute import clubs_summary_doc, form_clubs, write_clubs
from centile.features.join import with_customer_columns
from centile.io.outputs import fingerprint
from centile.pipeline import Context, Stage, register_stage
from centile.pipeline.parts import config_part


def _run(ctx: Context) -> dict[str, int]:
    table = with_customer_columns(ctx.frame("features"), ctx.frame_or_none("clv_features"))
    res = form_clubs(table, ctx.cfg, previous=ctx.option("previous"))
    ctx.publish(clubs=res.clubs, club_summary=res.summary, ranks=res.ranks)
    ctx.summaries["clubs"] = clubs_summary_doc(res)
    ctx.notes.extend(f"clubs: {n}" for n in res.notes)
    return write_clubs(res, ctx.staging)


def _previous(options: Mapping[str, Any]) -> Any:
    """--previous enters the key through the content of its clubs.parquet."""
    prev = options.get("previous")
    if not prev:
        return None
    p = Path(prev) / "clubs.parquet"
    if not p.is_file():
        return {"previous": str(prev)}
    fp = fingerprint(p)
    return {"previous": [fp["bytes"], fp["fingerprint"]]}


STAGE = register_stage(Stage(
    "clubs", _run, writes=("clubs", "club_summary", "ranks", "club_stability"), reads=("features",),
    uses=("clv_features",), config=config_part("clubs", "strategy", "group_by", "seed"), options=_previous))
