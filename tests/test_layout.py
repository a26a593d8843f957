"""The house: no import cycles, kernels free of data-frame libraries, registries that refuse
duplicates, stages ordered from their declared frames, config validated before any stage runs,
and a capability added from outside the engine through the public registration API only."""

from __future__ import annotations

import ast
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from centile.cli import app
from centile.config import Config, load_config
from centile.errors import ConfigError
from centile.pipeline import STAGES, Stage
from centile.registry import RegistryError

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _modules(folder: Path, package: str) -> dict[str, Path]:
    out = {}
    for f in folder.rglob("*.py"):
        parts = list(f.relative_to(folder).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join([package, *parts])] = f
    return out


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Modules of ``mods`` that ``name`` imports (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            cands = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            cands = [a.name for a in node.names]
        else:
            continue
        found |= {c for c in cands if c in mods}
    return found


def test_no_import_cycles_among_the_engine_modules():
    mods = _modules(ROOT / "engine", "centile")
    graph = {m: _imports(m, p, mods) - {m} for m, p in mods.items()}
    # a package's __init__ re-exporting its own submodules is not a cycle
    for m in graph:
        graph[m] = {t for t in graph[m] if not (t.startswith(m + ".") and mods[m].name == "__init__.py")}
    seen: dict[str, int] = {}  # 1 = on the path, 2 = done

    def visit(m: str, path: list[str]) -> None:
        seen[m] = 1
        for t in sorted(graph[m]):
            if seen.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in seen:
                visit(t, path + [t])
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m, [m])


def test_kernels_import_no_data_frame_library():
    banned = {"polars", "duckdb", "pyarrow", "pandas"}
    for f in (ROOT / "kernels").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not {n.split(".")[0] for n in names} & banned, f"{f.name} imports {names}"


def test_registering_the_capabilities_imports_none_of_their_heavy_libraries():
    """Every command registers the built-in capabilities (to check a config's sections, to order the
    stages) and imports the CLI's printers; neither may import what the computations need: they once
    cost ``centile ingest`` 1.8 CPU s (scipy for steering and uplift, numba for three kernels) and
    ``centile validate`` 1.5 s more (scipy.stats for the uplift printer) before any work."""
    import subprocess
    import sys

    code = ("import sys; from centile.registry import load_builtin; load_builtin(); "
            "from centile.config import config_sections; config_sections(); "
            "from centile import attribution, baskets, clv, steering, uplift; "
            "import centile.cli.app, centile.cli.render, centile.cli.refresh, centile.cli.steering, "
            "centile.cli.attribution, centile.cli.baskets, centile.cli.bench, centile.cli.cluster; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'scipy', 'numba', 'sklearn', 'pandas'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    # the packages' names still resolve (imported on first use)
    from centile import steering, uplift

    assert steering.solve_plan.__module__ == "centile.steering.solve"
    assert "preferred_rows" in dir(uplift)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        steering.no_such_name  # noqa: B018


def test_the_engine_calls_no_private_kernel_function():
    for f in (ROOT / "engine").rglob("*.py"):
        text = f.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("centile.kernels"):
                assert not any(part.startswith("_") for part in (node.module or "").split(".")), f
                assert not any(a.name.startswith("_") for a in node.names), f"{f}: {node.module}"
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in {"btyd", "bootstrap", "topk",
                                                                                "percentile", "binning", "synth"}):
                raise AssertionError(f"{f}: {node.value.id}.{node.attr}")


def test_registries_refuse_a_second_stage_or_frame_under_a_taken_name():
    from centile.pipeline import register_stage, stages

    stages()
    with STAGES.scoped():
        with pytest.raises(RegistryError, match="registered twice"):
            register_stage(Stage("clubs", lambda ctx: {}))
        with pytest.raises(RegistryError, match="already written by stage 'features'"):
            register_stage(Stage("other", lambda ctx: {}, writes=("features",)))


def test_stage_order_follows_the_declared_frames_not_the_list():
    from centile.pipeline.dag import order

    a = Stage("a", lambda ctx: {}, writes=("x",), uses=("y",))
    b = Stage("b", lambda ctx: {}, writes=("y",))
    c = Stage("c", lambda ctx: {}, reads=("x", "y"))
    assert [s.name for s in order([c, a, b])] == ["b", "a", "c"]
    with pytest.raises(RegistryError, match="no registered stage writes"):
        order([Stage("d", lambda ctx: {}, reads=("nothing",))])
    with pytest.raises(RegistryError, match="cycle"):
        order([Stage("p", lambda ctx: {}, writes=("p",), reads=("q",)),
               Stage("q", lambda ctx: {}, writes=("q",), reads=("p",))])


def test_built_in_stages_run_in_flow_order():
    from centile.pipeline import stages
    from centile.pipeline.dag import order

    built_in = ["features", "clv", "clubs", "segments", "clv_groups", "uplift"]
    assert [s.name for s in order(stages()) if s.name in built_in] == built_in


# ---------------------------------------------------------------------------
# config typos fail at load, before any stage runs

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from centile.synth import generate

    root = tmp_path_factory.mktemp("layout")
    generate(root / "data", 3_000, seed=5)
    return root / "data"


@pytest.mark.parametrize("body, names", [
    ('[uplif]\nreplicates = 10\n', ["'uplif'", "did you mean 'uplift'"]),
    ('[uplift]\nreplicatse = 10\n', ["[uplift]", "'replicatse'", "did you mean 'replicates'"]),
    ('[[clubs.club]]\nname = "x"\nmetric = "orders_12m"\neligble = "orders_12m > 5"\n',
     ["[[clubs.club]]", "'eligble'", "did you mean 'eligible'"]),
    ('[clubs]\nshares = "0.01"\n', ["[clubs] shares", "'0.01'", "list of fractions"]),
    ('[features]\nwindow_6m = "half a year"\n', ["[features] window_6m", "not an integer"]),
    ('[[clubs.club]]\nname = "x"\nmetric = "order_12m"\n', ["club x", "'order_12m'", "did you mean 'orders_12m'"]),
    ('[report.targets]\navg_order_value = 60\n', ["[report.targets]", "did you mean 'avg_order_value_12m'"]),
    ('[segments]\nk = "many"\n', ["[segments] k", "'many'"]),
    ('[clv]\nhorizon = "long"\n', ["[clv] horizon", "'long'"]),
])
def test_config_typos_fail_before_any_stage_with_file_and_key(data, tmp_path, body, names):
    cfg = tmp_path / "centile.toml"
    cfg.write_text(f'data = "{data}"\n' + body)
    out = tmp_path / "out"
    r = runner.invoke(app, ["run", "-c", str(cfg), "--out", str(out)])
    assert r.exit_code == 1, r.output
    assert str(cfg) in r.stderr
    for n in names:
        assert n in r.stderr, (n, r.stderr)
    assert "running" not in r.stderr and not out.exists()


def test_load_config_names_the_file(data, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'data = "{data}"\n[holdout]\ncontrol_shar = 0.1\n')
    with pytest.raises(ConfigError, match=r"c\.toml: \[holdout\].*'control_shar'.*did you mean 'control_share'"):
        load_config(cfg)


# ---------------------------------------------------------------------------
# a capability from outside the engine, through the public API only

def test_a_toy_capability_plugs_into_run_pipeline(data, tmp_path):
    from dataclasses import dataclass

    from centile.config import CONFIG_SECTIONS, check_keys, register_config_section
    from centile.pipeline import register_stage, stages
    from centile.report.html import read, table
    from centile.report.sections import SECTIONS, register_section, sections
    from centile.run import run_pipeline

    @dataclass(frozen=True)
    class LoyaltySettings:
        top: int = 10

    def parse(cfg: Config) -> LoyaltySettings:
        raw = cfg.section("loyalty")
        check_keys("[loyalty]", raw, ("top",))
        top = raw.get("top", 10)
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise ConfigError(f"[loyalty] top = {top!r}: must be a positive integer")
        return LoyaltySettings(top)

    def run(ctx):
        top = ctx.cfg.settings("loyalty").top
        clubs = ctx.frame("clubs")
        board = (ctx.frame("features").join(clubs.select("customer_id", "club"), on="customer_id", how="inner")
                 .sort("net_revenue_lifetime", "customer_id", descending=[True, False]).head(top)
                 .select("customer_id", "club", "net_revenue_lifetime"))
        board.write_parquet(ctx.staging.path("loyalty_board.parquet"))
        ctx.summaries["loyalty"] = {"rows": board.height}
        return {"loyalty_board": board.height}

    def render(results, cfg):
        board = read(results, "loyalty_board")
        return "" if board is None else f'<section id="loyalty"><h2>Loyalty board</h2>{table(board)}</section>'

    stages(), sections()  # the built-in capabilities first
    with STAGES.scoped(), CONFIG_SECTIONS.scoped(), SECTIONS.scoped():
        register_config_section("loyalty", parse)
        register_stage(Stage("loyalty", run, writes=("loyalty_board",), reads=("features", "clubs")))
        register_section("loyalty", "Loyalty", render)

        bad = tmp_path / "bad.toml"
        bad.write_text(f'data = "{data}"\n[loyalty]\ntopp = 3\n')
        with pytest.raises(ConfigError, match="did you mean 'top'"):
            load_config(bad)
        good = tmp_path / "good.toml"
        good.write_text(f'data = "{data}"\n[loyalty]\ntop = 3\n')
        res = run_pipeline(load_config(good), tmp_path / "out")
        assert res.stages["loyalty"]["status"] == "ran"
        assert list(res.stages)[-1] == "loyalty" or list(res.stages).index("loyalty") > list(res.stages).index("clubs")
        board = pl.read_parquet(tmp_path / "out" / "loyalty_board.parquet")
        assert board.height == 3
        html = (tmp_path / "out" / "report.html").read_text()
        assert '<section id="loyalty">' in html and 'href="#loyalty"' in html
        # a rerun reuses it like any built-in stage
        again = run_pipeline(load_config(good), tmp_path / "out")
        assert again.stages["loyalty"]["status"] == "reused"
    assert "loyalty" not in STAGES and "loyalty" not in CONFIG_SECTIONS
    with pytest.raises(ConfigError, match="'loyalty'"):
        load_config(good)
