"""Incremental refresh: batches of order lines and e-mail events applied to a persistent
per-customer state, features from the state equal to a full recompute (``centile ingest``,
``centile features --state``)."""

from centile.refresh.features import features_from_state, run_state_features
from centile.refresh.ingest import IngestResult, ingest, state_summary
from centile.refresh.settings import RefreshSettings

__all__ = ["IngestResult", "RefreshSettings", "features_from_state", "ingest", "run_state_features",
           "state_summary"]
