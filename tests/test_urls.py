"""Inputs named by fsspec URLs: ``data = "memory://…"`` reads the same rows as the local folder, and
bad URLs are clear errors. (``file://`` on a Dask cluster: tests/test_dask.py.)"""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from typer.testing import CliRunner

fsspec = pytest.importorskip("fsspec")

from centile.config import load_config  # noqa: E402
from centile.errors import ConfigError  # noqa: E402
from centile.synth import generate  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("urls") / "data"
    generate(root, 800, seed=7)
    return root


def _to_memory(folder) -> str:
    """The data folder copied into fsspec's in-memory filesystem; its URL."""
    url = f"memory://centile-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")
    for f in folder.rglob("*"):
        if f.is_file() and "truth" not in f.relative_to(folder).parts:
            fs.pipe(f"{url}/{f.relative_to(folder).as_posix()}", f.read_bytes())
    return url


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def test_a_run_over_a_memory_url_writes_the_bytes_of_the_local_folder(folder, tmp_path):
    from centile.run import run_pipeline

    url = _to_memory(folder)
    cfg = load_config(data=url)
    assert cfg.tables["orders"].paths == (f"memory:///{url[len('memory://'):]}/orders",)
    assert all(p.startswith("memory:///") for t in cfg.tables.values() for p in t.paths)
    run_pipeline(load_config(data=str(folder)), tmp_path / "local", report=False)
    run_pipeline(cfg, tmp_path / "url", report=False)
    a, b = _digests(tmp_path / "local"), _digests(tmp_path / "url")
    assert len(a) >= 20 and a == b
    manifest = json.loads((tmp_path / "url" / "manifest.json").read_text())
    orders = manifest["inputs"]["orders"]
    assert orders and all(f["path"].startswith("memory:///") and f["fingerprint"].startswith("blake2b:")
                          for f in orders)
    local = json.loads((tmp_path / "local" / "manifest.json").read_text())["inputs"]["orders"]
    assert [f["fingerprint"] for f in orders] == [f["fingerprint"] for f in local]


def test_a_table_path_url_with_a_glob_and_the_cli(folder, tmp_path):
    from centile.cli import app

    url = _to_memory(folder)
    toml = tmp_path / "c.toml"
    toml.write_text(f'data = "{url}"\n[tables.orders]\npath = "{url}/orders/*.parquet"\n')
    cfg = load_config(toml)
    assert cfg.tables["orders"].paths[0].endswith("/orders/part-00000.parquet")
    r = CliRunner().invoke(app, ["features", "-c", str(toml), "-o", str(tmp_path / "f")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["features", "--data", str(folder), "-o", str(tmp_path / "g")])
    assert r.exit_code == 0, r.output
    assert _digests(tmp_path / "f") == _digests(tmp_path / "g")
    r = CliRunner().invoke(app, ["validate", "--data", url])  # a URL on the command line too
    assert r.exit_code == 0, r.output


def test_bad_urls_are_clear_errors(folder, tmp_path):
    url = _to_memory(folder)
    with pytest.raises(ConfigError, match=r"memory://nowhere-at-all.*not a folder"):
        load_config(data="memory://nowhere-at-all")
    toml = tmp_path / "c.toml"
    toml.write_text(f'data = "{url}"\n[tables.products]\npath = "{url}/nope.parquet"\n')
    with pytest.raises(ConfigError, match=r"tables.products.path: memory://.*/nope.parquet does not exist"):
        load_config(toml)
    toml.write_text(f'data = "{url}"\n[tables.orders]\npath = "{url}/orders/*.csv"\n')
    with pytest.raises(ConfigError, match=r"the glob .* matches no file"):
        load_config(toml)
    with pytest.raises(ConfigError, match=r"no fsspec filesystem for nosuchfs://"):
        load_config(data="nosuchfs://bucket/data")


def test_sql_over_url_inputs_stays_read_only(folder):
    from centile.errors import QueryError
    from centile.io.query import run_query

    cfg = load_config(data=_to_memory(folder))
    assert run_query("SELECT count(*) AS n FROM orders", cfg, read_only=True)["n"][0] > 0
    assert run_query("SELECT count(*) AS n FROM orders", cfg)["n"][0] > 0
    with pytest.raises(QueryError):
        run_query("SELECT * FROM read_csv('/etc/passwd')", cfg, read_only=True)


def test_a_run_to_an_output_url_writes_a_new_prefix_then_the_pointer(folder, tmp_path, monkeypatch):
    from centile.errors import OutputError
    from centile.io.outputs import current_run
    from centile.run import run_pipeline

    fs = fsspec.filesystem("memory")
    out = f"memory://out-{uuid.uuid4().hex[:8]}/centile"
    assert current_run(out) is None
    cfg = load_config(data=str(folder))
    run_pipeline(cfg, tmp_path / "local", report=False)
    first = run_pipeline(cfg, out, report=False)
    assert isinstance(first.out, str) and first.out == current_run(out)
    assert fs.cat_file(out + "/LATEST").decode().strip() == first.out.rsplit("/", 1)[1]
    local = _digests(tmp_path / "local")
    remote = {p.rsplit("/", 1)[1]: hashlib.sha256(fs.cat_file(p)).hexdigest()
              for p in fs.glob(first.out + "/*.parquet")}
    assert len(local) >= 20 and remote == local
    manifest = json.loads(fs.cat_file(first.out + "/manifest.json"))
    assert set(manifest["stages"]) and all(r["status"] != "reused" for r in manifest["stages"].values())

    # a second run: a new prefix, the first run stays; unchanged stages are copied within the store
    copies = []
    real_copy = fs.copy
    monkeypatch.setattr(fs, "copy", lambda a, b, **kw: (copies.append(b), real_copy(a, b, **kw))[1])
    second = run_pipeline(cfg, out, report=False)
    assert second.out != first.out and current_run(out) == second.out and fs.exists(first.out + "/manifest.json")
    ran = {k for k, r in second.stages.items() if r["status"] != "skipped"}
    assert ran and all(second.stages[k]["status"] == "reused" for k in ran)
    assert {p.rsplit("/", 1)[1]: hashlib.sha256(fs.cat_file(p)).hexdigest()
            for p in fs.glob(second.out + "/*.parquet")} == local
    assert {c.rsplit("/", 1)[1] for c in copies} >= set(local) and "manifest.json" not in str(copies)
    monkeypatch.undo()

    # an upload that fails half-way: the pointer still names the second run, the partial prefix is gone
    real, calls = fs.put_file, []

    def flaky(lpath, rpath, **kw):
        calls.append(rpath)
        if len(calls) == 3:
            raise OSError("connection reset")
        return real(lpath, rpath, **kw)

    monkeypatch.setattr(fs, "put_file", flaky)
    with pytest.raises(OutputError, match=r"cannot write the run to memory://.*connection reset.*LATEST still names"):
        run_pipeline(cfg, out, force=True, report=False)
    assert current_run(out) == second.out
    assert len(fs.ls(out + "/runs")) == 2


def test_a_run_published_meanwhile_is_not_overwritten(folder, monkeypatch):
    """LATEST moves only if it still names the run it named when this run started."""
    from centile.errors import OutputError
    from centile.io import outputs
    from centile.io.outputs import current_run
    from centile.run import run_pipeline

    fs = fsspec.filesystem("memory")
    out = f"memory://race-{uuid.uuid4().hex[:8]}/centile"
    cfg = load_config(data=str(folder))
    first = run_pipeline(cfg, out, report=False)
    real = outputs._pointer
    seen = []

    def other_run_publishes(fs_, base):  # the read just before the write sees another run's id
        seen.append(1)
        if len(seen) == 2:
            fs_.pipe_file(f"{base}/LATEST", b"20991231T000000Z-other\n")
        return real(fs_, base)

    monkeypatch.setattr(outputs, "_pointer", other_run_publishes)
    with pytest.raises(OutputError, match=r"another run \(20991231T000000Z-other\) was published.*files are complete "
                                          r"under memory://.*/runs/"):
        run_pipeline(cfg, out, force=True, report=False)
    monkeypatch.undo()
    assert fs.cat_file(out + "/LATEST").decode().strip() == "20991231T000000Z-other"
    mine = [p for p in fs.ls(out + "/runs", detail=False) if p.rstrip("/") != first.out.split("://", 1)[1]]
    assert len(mine) == 1 and fs.exists(mine[0] + "/manifest.json")
    assert current_run(out).endswith("/runs/20991231T000000Z-other")


def test_keep_runs_removes_old_runs_but_not_one_started_meanwhile(folder, tmp_path):
    from centile.errors import OutputError
    from centile.io.outputs import current_run, prune_runs
    from centile.run import run_pipeline

    fs = fsspec.filesystem("memory")
    out = f"memory://keep-{uuid.uuid4().hex[:8]}/centile"
    cfg = load_config(data=str(folder))
    runs = [run_pipeline(cfg, out, report=False, keep_runs=2).out for _ in range(4)]
    left = sorted(p.rsplit("/", 1)[1] for p in fs.ls(out + "/runs", detail=False))
    assert left == sorted(r.rsplit("/", 1)[1] for r in runs[-2:]) and current_run(out) == runs[-1]
    assert fs.exists(runs[-1] + "/features.parquet") and fs.exists(runs[-2] + "/features.parquet")

    # the rule itself: only ids older than the run current at the start go, the newest N and `keep` stay
    base = out.split("://", 1)[1]
    for i in ("20200101T000000Z-a", "20200102T000000Z-b", "20990101T000000Z-late"):
        fs.pipe_file(f"{base}/runs/{i}/manifest.json", b"{}")
    gone = prune_runs(fs, base, 1, keep=set(), older_than=runs[-1].rsplit("/", 1)[1])
    assert sorted(gone) == ["20200101T000000Z-a", "20200102T000000Z-b", runs[-2].rsplit("/", 1)[1]]
    assert fs.exists(f"{base}/runs/20990101T000000Z-late") and fs.exists(runs[-1] + "/manifest.json")

    with pytest.raises(OutputError, match="applies to an output URL only"):
        run_pipeline(cfg, tmp_path / "local", report=False, keep_runs=3)


def test_only_centile_run_writes_to_a_url(folder, tmp_path):
    from centile.cli import app

    r = CliRunner().invoke(app, ["features", "--data", str(folder), "-o", "memory://nope/features"])
    assert r.exit_code == 1 and "only `centile run` writes to a URL" in r.output
    out = f"memory://cli-{uuid.uuid4().hex[:8]}"
    r = CliRunner().invoke(app, ["run", "--data", str(folder), "-o", out, "--json"])
    assert r.exit_code == 0, r.output
    from centile.io.outputs import current_run

    assert json.loads(r.stdout)["out"] == current_run(out)
    assert fsspec.filesystem("memory").exists(current_run(out) + "/report.html")


def test_sql_and_report_read_the_run_an_output_url_names(folder, tmp_path):
    from centile.cli import app
    from centile.io.outputs import current_run
    from centile.io.query import run_query
    from centile.run import run_pipeline

    out = f"memory://read-{uuid.uuid4().hex[:8]}/centile"
    cfg = load_config(data=str(folder))
    run_pipeline(cfg, tmp_path / "local", report=False)
    run_pipeline(cfg, out, report=False)
    q = "SELECT club, tier, count(*) AS n FROM clubs GROUP BY ALL ORDER BY ALL"
    want = run_query(q, results=tmp_path / "local")
    assert run_query(q, results=out).equals(want)
    assert run_query(q, results=current_run(out)).equals(want)  # a run prefix itself
    assert run_query(q, results=out, read_only=True).equals(want)
    from centile.errors import QueryError

    with pytest.raises(QueryError):  # read-only: nothing beyond the run's prefix
        run_query("SELECT * FROM read_parquet('memory:///elsewhere/x.parquet')", results=out, read_only=True)

    r = CliRunner().invoke(app, ["report", "--results", out, "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    assert "<html" in (tmp_path / "r.html").read_text()[:2000].lower()
    r = CliRunner().invoke(app, ["sql", q, "--results", out, "--format", "csv"])
    assert r.exit_code == 0 and r.stdout.count("\n") == want.height + 1, r.output
    r = CliRunner().invoke(app, ["sql", q, "--results", "memory://nothing-here/x"])
    assert r.exit_code == 1 and "no run there" in r.output
