"""The stage contract: what a capability plugs into ``centile run``, and the registry it plugs into.

A :class:`Stage` declares the input tables it reads, the frames it reads
(``reads``: required; ``uses``: read when present) and the frames it writes.
The runner orders stages from those declarations (:mod:`centile.pipeline.dag`);
it never names a stage. Frames are the Parquet files ``<name>.parquet`` a stage
writes into the run folder, or frames a stage derives from its files
(``derived``), e.g. CLV's ``clv_features``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from centile.config import Config
from centile.registry import Registry, RegistryError, load_builtin
from centile.runtime import Progress

if TYPE_CHECKING:
    import polars as pl

    from centile.backend.session import Session
    from centile.io.outputs import Staging

log = logging.getLogger(__name__)


class StageSkipped(Exception):
    """Raised by a stage that cannot produce a meaningful result on these inputs (e.g. a
    model that does not fit): the run goes on, the stage is recorded as skipped with the reason."""


def _none(cfg: Config) -> Any:
    return None


@dataclass(frozen=True)
class Stage:
    """One step of ``centile run``.

    Parameters
    ----------
    name : str
        Unique; the key of the stage in the manifest.
    run : callable
        ``run(ctx) -> {file stem: rows}``; computes and writes into ``ctx.staging``.
    writes : tuple of str
        Frames it publishes (``<name>.parquet`` files unless listed in ``derived``).
    reads : tuple of str
        Frames it needs: it is skipped ("needs ...") when their stage did not run.
    uses : tuple of str
        Frames it reads when they exist; it runs without them.
    tables : tuple of str
        Input tables it reads; their files' fingerprints enter its key.
    config : callable
        The part of the config it depends on (enters its key).
    options : callable, optional
        The part of the run options it depends on (enters its key), e.g. clubs and
        ``--previous``.
    skip : callable, optional
        ``skip(ctx) -> reason | None``: a reason not to run (missing inputs).
    derived : mapping
        Frames computed from its files on demand: name -> ``f(ctx) -> DataFrame``.
    from_state : callable, optional
        ``from_state(option) -> tables``: in a run over a refresh state (``option``: the run
        option ``refresh_state``), those of its ``tables`` it reads from the state, not from the
        input files; when no stage of the run reads a table from its files, the session does not
        validate it (:attr:`centile.backend.session.Session.elsewhere`).
    """

    name: str
    run: Callable[[Context], dict[str, int]]
    writes: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    config: Callable[[Config], Any] = _none
    options: Callable[[Mapping[str, Any]], Any] | None = None
    skip: Callable[[Context], str | None] | None = None
    derived: Mapping[str, Callable[[Context], pl.DataFrame]] = field(default_factory=lambda: MappingProxyType({}))
    from_state: Callable[[Mapping[str, Any]], tuple[str, ...]] | None = None

    @property
    def frames(self) -> tuple[str, ...]:
        """Every frame it publishes, files and derived."""
        return (*self.writes, *(d for d in self.derived if d not in self.writes))


STAGES: Registry[Stage] = Registry("stage")


def register_stage(stage: Stage) -> Stage:
    """Add a stage to ``centile run``; a stage or frame name already taken raises :class:`RegistryError`."""
    taken = {f: s.name for s in STAGES.items() for f in s.frames}
    for f in stage.frames:
        if f in taken:
            raise RegistryError(f"frame {f!r} of stage {stage.name!r} is already written by stage {taken[f]!r}")
    return STAGES.add(stage.name, stage)


def stages() -> list[Stage]:
    """Every registered stage, the built-in capabilities first (in registration order)."""
    load_builtin()
    return STAGES.items()


@dataclass
class Context:
    """What the stages of one run share: config, run options, the open inputs, published frames."""

    cfg: Config
    staging: Staging
    options: Mapping[str, Any]
    progress: Progress | None
    open_inputs: Callable[[], Session]
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)
    loaders: dict[str, Callable[[Context], pl.DataFrame]] = field(default_factory=dict)
    summaries: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    session: Session | None = None

    def say(self, msg: str) -> None:
        log.info(msg)
        if self.progress:
            self.progress(msg)

    def open(self) -> Session:
        """The validated inputs (opened once, on first use)."""
        if self.session is None:
            self.session = self.open_inputs()
        return self.session

    def option(self, name: str) -> Any:
        return self.options.get(name)

    def publish(self, **frames: pl.DataFrame) -> None:
        """Keep frames this stage computed in memory for later stages (its files are written anyway)."""
        self.frames.update(frames)

    def frame(self, name: str) -> pl.DataFrame:
        """A frame of an earlier stage of this run, e.g. ``frame("features")``."""
        if name not in self.frames:
            if name in self.loaders:
                self.frames[name] = self.loaders[name](self)
            else:
                path = self.staging.tmp / f"{name}.parquet"
                if not path.exists():
                    raise KeyError(name)
                import polars as pl

                self.frames[name] = pl.read_parquet(path)
        return self.frames[name]

    def frame_columns(self, name: str, columns: Iterable[str]) -> pl.DataFrame | None:
        """``customer_id`` and those of ``columns`` the frame has, in the frame's column order (None
        without the frame). From memory when the frame is there, else only these columns are read
        from its file and nothing is kept: a stage that groups by two columns of ``segments`` does
        not hold every column of every customer."""
        if not self.has(name):
            return None
        want = {"customer_id", *columns}
        if name in self.frames or name in self.loaders:
            df = self.frame(name)
            return df.select([c for c in df.columns if c in want])
        import polars as pl

        path = self.staging.tmp / f"{name}.parquet"
        return pl.read_parquet(path, columns=[c for c in pl.read_parquet_schema(path) if c in want])

    def frame_names(self, name: str) -> list[str]:
        """The column names of a frame of this run ([] without it), without reading its rows."""
        if name in self.frames or name in self.loaders:
            return list(self.frame(name).columns)
        path = self.staging.tmp / f"{name}.parquet"
        if not path.exists():
            return []
        import polars as pl

        return list(pl.read_parquet_schema(path))

    def has(self, name: str) -> bool:
        return name in self.frames or name in self.loaders or (self.staging.tmp / f"{name}.parquet").exists()

    def frame_or_none(self, name: str) -> pl.DataFrame | None:
        return self.frame(name) if self.has(name) else None
