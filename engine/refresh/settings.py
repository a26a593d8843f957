"""``[refresh]``: the incremental refresh's settings (``centile ingest --state``)."""

from __future__ import annotations

from dataclasses import dataclass

from centile.config import Config, _as_bool, _as_int, check_keys, register_config_section


@dataclass(frozen=True)
class RefreshSettings:
    """``lateness_days``: how many days behind the longest feature window the state keeps its day
    buckets (data older than that arrives "too late" and rebuilds its partitions from the
    ledger's batch files); ``partitions``: customer-hash partitions of the state's files;
    ``max_runs``: how many run files (one per ingest) a state table of a partition may have before
    an ingest merges them into one; ``sorted_copies``: whether each run of the tables the features
    read also gets a copy sorted by customer (uncompressed Arrow, memory-mapped), from which the
    feature cache takes the rows of the customers it recomputes instead of scanning the runs
    (faster, about 3.8 times the state's disk space; runs without a copy are scanned)."""

    lateness_days: int = 7
    partitions: int = 8
    max_runs: int = 8
    sorted_copies: bool = True


def parse(cfg: Config) -> RefreshSettings:
    raw = cfg.section("refresh")
    check_keys("[refresh]", raw, ("lateness_days", "partitions", "max_runs", "sorted_copies"))
    return RefreshSettings(
        lateness_days=_as_int(raw.get("lateness_days", 7), "[refresh] lateness_days"),
        partitions=_as_int(raw.get("partitions", 8), "[refresh] partitions", minimum=1, maximum=4096),
        max_runs=_as_int(raw.get("max_runs", 8), "[refresh] max_runs", minimum=1),
        sorted_copies=_as_bool(raw.get("sorted_copies", True), "[refresh] sorted_copies"),
    )


# a config for `centile ingest` may hold only the column mappings and [refresh]: the batches are
# the order lines
register_config_section("refresh", parse, without_orders=lambda raw: True)
