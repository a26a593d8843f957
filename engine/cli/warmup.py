"""``centile warmup``: compile the numba kernels into the cache once (e.g. after install), so that
the first real run does not spend its first minute compiling."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import typer

from centile.cli.app import (
    JsonOpt,
    ThreadsOpt,
    _errors,
    _print_json,
    _status,
    out_console,
)

#: customers of the generated data the warm-up run works on (small: only the types matter)
WARMUP_CUSTOMERS = 600


def _kernel_dispatchers() -> dict[str, list[Any]]:
    """Every numba dispatcher of ``centile.kernels``, by module."""
    import importlib
    import pkgutil

    from numba.core.registry import CPUDispatcher

    from centile import kernels

    found: dict[str, list[Any]] = {}
    for info in pkgutil.iter_modules(kernels.__path__):
        mod = importlib.import_module(f"centile.kernels.{info.name}")
        found[mod.__name__] = [v for v in vars(mod).values()
                               if isinstance(v, CPUDispatcher) and v.py_func.__module__ == mod.__name__]
    return found


class _CompileClock:
    """Seconds spent compiling (cache misses only), by kernel module of the outermost kernel."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._starts: list[float] = []

    def __enter__(self) -> _CompileClock:
        import numba.core.event as ev

        clock = self

        class Listener(ev.Listener):
            def on_start(self, event: Any) -> None:
                clock._starts.append(time.perf_counter())

            def on_end(self, event: Any) -> None:
                took = time.perf_counter() - clock._starts.pop()
                if not clock._starts:  # nested compiles count in the outermost kernel
                    clock.seconds[event.data["dispatcher"].py_func.__module__] += took

        self._listener = Listener()
        ev.register("numba:compile", self._listener)
        return self

    def __exit__(self, *exc: object) -> None:
        import numba.core.event as ev

        ev.unregister("numba:compile", self._listener)


def _warm_run(folder: Path, threads: int | None, progress: Any) -> None:
    """Generate a small data set and run every capability on it with the demo configuration, so
    each kernel is compiled for the argument types a real run passes."""
    import centile
    from centile.config import load_config
    from centile.run import run_pipeline
    from centile.synth import generate

    progress("generating a small data set")
    generate(folder / "data", WARMUP_CUSTOMERS, seed=1)
    demo = Path(centile.__file__).resolve().parent / "examples" / "demo.toml"
    body = ""
    if demo.is_file():  # the demo's capability settings, without its data path
        body = "\n".join(line for line in demo.read_text().splitlines() if not line.startswith("data ="))
    cfg_path = folder / "warmup.toml"
    cfg_path.write_text(f"data = {str(folder / 'data')!r}\n{body}\n")
    cfg = load_config(cfg_path, threads=threads)
    progress("running every capability")
    run_pipeline(cfg, folder / "out", report=False, progress=progress)
    # Pareto/NBD is fitted only when a config asks for it: its public wrappers coerce their
    # inputs to contiguous float64, so tiny arrays compile what a fit and a prediction use
    import numpy as np

    from centile.kernels import btyd

    progress("Pareto/NBD")
    x, tx, T = np.array([0.0, 1.0, 3.0]), np.array([0.0, 2.0, 5.0]), np.array([6.0, 6.0, 6.0])
    params = np.array([0.5, 10.0, 0.6, 12.0])
    btyd.pareto_nbd_loglik(params, x, tx, T, np.ones(3))
    btyd.pareto_nbd_loglik_each(params, x, tx, T)
    btyd.pareto_nbd_predict(params, x, tx, T, 52.0)
    for strategy in ("priority", "best-rank"):  # each club strategy compiles its own kernel
        if strategy != cfg.strategy:
            progress(f"clubs, strategy {strategy}")
            run_pipeline(cfg.with_(strategy=strategy), folder / f"out-{strategy}", report=False,
                         progress=progress)


def warmup_kernels(threads: int | None = None, progress: Any = None) -> dict[str, Any]:
    """Compile the kernels a run uses into numba's cache; per kernel module the seconds spent
    compiling (0 when the cache already held it) and the kernels loaded."""
    import logging
    import tempfile

    progress = progress or (lambda msg: None)
    # the warm-up's own run is not the user's: no warnings about its data on the console
    handlers = logging.getLogger().handlers
    levels = [h.level for h in handlers]
    for h in handlers:
        h.setLevel(logging.ERROR)
    t0 = time.perf_counter()
    try:
        with _CompileClock() as clock, tempfile.TemporaryDirectory(prefix="centile-warmup-") as tmp:
            _warm_run(Path(tmp), threads, progress)
    finally:
        for h, level in zip(handlers, levels, strict=True):
            h.setLevel(level)
    modules = {}
    for mod, dispatchers in sorted(_kernel_dispatchers().items()):
        if not dispatchers:
            continue
        # loaded: kernels with a machine-code version in this process (a helper that a cached
        # kernel inlined is not loaded on its own, so the count is lower on a warm cache)
        modules[mod.rsplit(".", 1)[1]] = {
            "compile_seconds": round(clock.seconds.get(mod, 0.0), 2),
            "kernels": len(dispatchers), "loaded": sum(1 for d in dispatchers if d.signatures)}
    return {"seconds": round(time.perf_counter() - t0, 2),
            "compile_seconds": round(sum(clock.seconds.values()), 2), "modules": modules}


def register(app: typer.Typer) -> None:
    @app.command()
    def warmup(threads: ThreadsOpt = None, json_: JsonOpt = False) -> None:
        """Compile the numba kernels into the cache (once, e.g. after install or an upgrade).

        Runs every capability on a small generated data set, so each kernel is compiled for the
        types a real run uses; prints per kernel module the seconds spent compiling (0 when the
        cache already held it). Kernels are cached next to the installed package or in
        NUMBA_CACHE_DIR.
        """
        with _errors():
            with _status("compiling kernels") as progress:
                doc = warmup_kernels(threads, progress)
            if json_:
                _print_json(doc)
                return
            from rich.table import Table

            t = Table(title=f"Kernels compiled in {doc['seconds']:.1f} s "
                            f"({doc['compile_seconds']:.1f} s compiling)", title_justify="left")
            for c in ("module", "compile s", "kernels", "loaded"):
                t.add_column(c, justify="left" if c == "module" else "right")
            for name, m in doc["modules"].items():
                t.add_row(name, f"{m['compile_seconds']:.2f}", str(m["kernels"]), str(m["loaded"]))
            out_console.print(t)
