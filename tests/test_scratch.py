"""Issue 16: ``[backend] scratch`` puts the run's scratch files (DuckDB's spill, the customer-hash
pieces, frames handed back by workers) in a folder of the user's choice, e.g. a shared file system
on a cluster, instead of beside ``--out`` (or a local temp folder for an output URL)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from centile.backend import buckets
from centile.backend.session import scratch_folder
from centile.config import load_config
from centile.errors import ConfigError, OutputError
from centile.synth import generate


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("scratch") / "data"
    generate(root, 1_200, seed=5)
    return root


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def test_the_key_and_its_variable_are_read_as_absolute_folder_paths(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CENTILE_SCRATCH", raising=False)
    toml = tmp_path / "c.toml"
    toml.write_text(f'data = "{data}"\n[backend]\nscratch = "shared/tmp"\n')
    assert load_config(toml).backend.scratch == str(tmp_path / "shared" / "tmp")
    assert load_config(toml).as_dict()["backend"]["scratch"] == str(tmp_path / "shared" / "tmp")
    assert load_config(data=str(data), scratch="file:///mnt/x").backend.scratch == "/mnt/x"
    monkeypatch.setenv("CENTILE_SCRATCH", "/mnt/y")
    assert load_config(data=str(data)).backend.scratch == "/mnt/y"
    monkeypatch.delenv("CENTILE_SCRATCH")
    assert load_config(data=str(data)).backend.scratch is None
    with pytest.raises(ConfigError, match=r"\[backend\] scratch = 's3://b/tmp'.*not an object store"):
        load_config(data=str(data), scratch="s3://b/tmp")
    toml.write_text(f'data = "{data}"\n[backend]\nscratch = 3\n')
    with pytest.raises(ConfigError, match=r"\[backend\] scratch"):
        load_config(toml)


def test_a_run_puts_its_pieces_in_the_scratch_folder_with_the_same_bytes(data, tmp_path, monkeypatch):
    from centile.run import run_pipeline

    written: list[str] = []
    monkeypatch.setattr(buckets, "observe", lambda table, files: written.extend(files))
    scratch = tmp_path / "shared"
    runs = {}
    for name, over in (("beside", {}), ("scratch", {"scratch": str(scratch)})):
        written.clear()
        out = tmp_path / f"run-{name}"
        run_pipeline(load_config(data=str(data), partitions=3, threads=2, buckets="on", **over), out, report=False)
        runs[name] = _digests(out)
        inside = [f for f in written if Path(f).is_relative_to(scratch)]
        if over:
            assert written and inside == written  # every piece was in the scratch folder
        else:
            assert written and not inside
    assert len(runs["beside"]) >= 10 and runs["scratch"] == runs["beside"]
    assert scratch.is_dir() and not list(scratch.iterdir())  # the run's own folder is gone
    assert not list(tmp_path.glob(".run-*.centile-*"))


def test_a_killed_runs_folder_is_removed_and_a_live_ones_kept(data, tmp_path):
    """Each run's spill name carries its process id; the folder under the key is named after the
    output, the host and the process, so the next run into the same output finds a killed one's."""
    cfg = load_config(data=str(data), scratch=str(tmp_path))
    spill = tmp_path / "out" / f".x.centile-spill-{os.getpid()}"
    proc = subprocess.Popen(["true"])  # a pid that has exited
    proc.wait()
    mine, owned = scratch_folder(cfg, spill)
    assert mine == owned and mine.is_dir() and mine.parent == tmp_path
    assert mine.name.startswith(".x.centile-spill-") and mine.name.endswith(f"-{os.getpid()}")
    host = mine.name.removeprefix(".x.centile-spill-").rsplit("-", 1)[0]
    stale = tmp_path / f".x.centile-spill-{host}-{proc.pid}"  # a killed run into the same output
    live = tmp_path / f".x.centile-spill-{host}-{os.getppid()}"  # a run still going
    other = tmp_path / f".x.centile-spill-otherhost-{proc.pid}"  # another host's: its pids are not ours
    elsewhere = tmp_path / f".y.centile-spill-{host}-{proc.pid}"  # a run into another output
    for d in (stale, live, other, elsewhere):
        (d / "pieces").mkdir(parents=True)
    again, _ = scratch_folder(cfg, spill)
    assert again == mine
    assert not stale.exists() and live.exists() and other.exists() and elsewhere.exists()
    # without the key: the folder beside the output, which the staging folder removes
    assert scratch_folder(load_config(data=str(data)), spill) == (spill, None)


def test_a_scratch_folder_that_cannot_be_created_is_a_clear_error(data, tmp_path):
    from centile.run import run_pipeline

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = load_config(data=str(data), scratch=str(blocker / "sub"))
    with pytest.raises(OutputError, match=r"\[backend\] scratch = .*cannot create .*writable folder"):
        run_pipeline(cfg, tmp_path / "out", report=False)
    assert not (tmp_path / "out").exists()


def test_an_output_url_on_a_cluster_takes_its_scratch_files_from_the_key(data, tmp_path, monkeypatch):
    """With an output URL the staging folder is in the client's temp folder, which the workers of a
    real cluster do not see; ``[backend] scratch`` names a folder they do (here a LocalCluster's
    worker processes), and the outputs are the bytes of the local backend."""
    import uuid

    import fsspec

    distributed = pytest.importorskip("distributed")
    from centile.backend import dask as dask_backend
    from centile.run import run_pipeline

    used: list[Path] = []

    def spy(cfg, spill):
        folder, owned = scratch_folder(cfg, spill)
        used.append(folder)
        return folder, owned

    monkeypatch.setattr(dask_backend, "scratch_folder", spy)

    local = tmp_path / "local"
    run_pipeline(load_config(data=str(data), partitions=3), local, report=False)
    scratch = tmp_path / "shared"
    url = f"memory://scratch-{uuid.uuid4().hex[:8]}/centile"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=40) as cluster:
        run_pipeline(load_config(data=str(data), partitions=3, backend="dask", scheduler=cluster.scheduler_address,
                                 scratch=str(scratch)), url, report=False)
    from centile.io.outputs import run_url

    fs = fsspec.filesystem("memory")
    prefix = run_url(url)
    got = {Path(p).name: hashlib.sha256(fs.cat(p)).hexdigest() for p in fs.glob(f"{prefix}/*.parquet")}
    assert len(got) >= 10 and got == _digests(local)
    assert used and all(f.parent == scratch for f in used)  # the session's scratch folder: under the key's
    assert scratch.is_dir() and not list(scratch.iterdir())
