"""Order stages from the frames they read and write (not from list position)."""

from __future__ import annotations

from centile.pipeline.stage import Stage
from centile.registry import RegistryError


def producers(stages: list[Stage]) -> dict[str, str]:
    """frame -> the stage that writes it."""
    return {f: s.name for s in stages for f in s.frames}


def dependencies(stage: Stage, made_by: dict[str, str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(stages it needs, stages it uses when they ran), from its ``reads`` and ``uses``."""
    needs = tuple(dict.fromkeys(made_by[f] for f in stage.reads if f in made_by))
    uses = tuple(dict.fromkeys(made_by[f] for f in stage.uses if f in made_by and made_by[f] not in needs))
    return needs, uses


def order(stages: list[Stage]) -> list[Stage]:
    """A topological order; among stages free to run, registration order decides.

    Raises :class:`RegistryError` for a required frame no stage writes or for a cycle.
    """
    made_by = producers(stages)
    by_name = {s.name: s for s in stages}
    deps: dict[str, set[str]] = {}
    for s in stages:
        missing = [f for f in s.reads if f not in made_by]
        if missing:
            raise RegistryError(f"stage {s.name!r} reads {missing}, which no registered stage writes")
        needs, uses = dependencies(s, made_by)
        deps[s.name] = set(needs) | set(uses)
        deps[s.name].discard(s.name)
    done: list[str] = []
    left = [s.name for s in stages]
    while left:
        ready = next((n for n in left if deps[n] <= set(done)), None)
        if ready is None:
            raise RegistryError(f"stages {left} depend on each other in a cycle")
        done.append(ready)
        left.remove(ready)
    return [by_name[n] for n in done]
