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

    second = run_pipeline(cfg, out, report=False)  # a new prefix; the first run stays
    assert second.out != first.out and current_run(out) == second.out and fs.exists(first.out + "/manifest.json")

    # an upload that fails half-way: the pointer still names the second run, the partial prefix is gone
    real, calls = fs.put_file, []

    def flaky(lpath, rpath, **kw):
        calls.append(rpath)
        if len(calls) == 3:
            raise OSError("connection reset")
        return real(lpath, rpath, **kw)

    monkeypatch.setattr(fs, "put_file", flaky)
    with pytest.raises(OutputError, match=r"cannot write the run to memory://.*connection reset.*LATEST still names"):
        run_pipeline(cfg, out, report=False)
    assert current_run(out) == second.out
    assert len(fs.ls(out + "/runs")) == 2


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
