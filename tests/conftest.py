"""Shared test configuration: hypothesis profiles, and the Dask tests' local cluster.

``fast`` (the default) keeps the whole suite quick on a laptop; ``ci`` runs
many more examples and is selected when the environment has ``CI=true``.
``HYPOTHESIS_PROFILE`` overrides both. Both are derandomized (seeded
randomness only: a failure reproduces). No test has a deadline: the first
call of a kernel includes numba compilation (or loading it from the cache).
"""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "fast",
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "ci",
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_default = "ci" if os.environ.get("CI", "").strip().lower() in {"true", "1"} else "fast"
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", _default))


@pytest.fixture(scope="module")
def cluster():
    """A Dask LocalCluster of 2 worker processes x 1 thread and a client of it, per test module
    (the Dask tests; skipped without ``distributed``)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=40) as c, distributed.Client(c, set_as_default=False) as client:
        yield c, client
