"""``[refresh]``: the incremental refresh's settings (``centile ingest --state``)."""

from __future__ import annotations

from dataclasses import dataclass

from centile.config import Config, _as_int, check_keys, register_config_section


@dataclass(frozen=True)
class RefreshSettings:
    """``lateness_days``: how many days behind the longest feature window the state keeps its day
    buckets (data older than that arrives "too late" and rebuilds its partitions from the
    ledger's batch files); ``partitions``: customer-hash partitions of the state's files;
    ``max_runs``: how many run files (one per ingest) a state table of a partition may have before
    an ingest merges them into one."""

    lateness_days: int = 7
    partitions: int = 8
    max_runs: int = 8


def parse(cfg: Config) -> RefreshSettings:
    raw = cfg.section("refresh")
    check_keys("[refresh]", raw, ("lateness_days", "partitions", "max_runs"))
    return RefreshSettings(
        lateness_days=_as_int(raw.get("lateness_days", 7), "[refresh] lateness_days"),
        partitions=_as_int(raw.get("partitions", 8), "[refresh] partitions", minimum=1, maximum=4096),
        max_runs=_as_int(raw.get("max_runs", 8), "[refresh] max_runs", minimum=1),
    )


# a config for `centile ingest` may hold only the column mappings and [refresh]: the batches are
# the order lines
register_config_section("refresh", parse, without_orders=lambda raw: True)
