"""Stage keys and reuse: a stage whose key matches the previous run's is linked, not recomputed.

A key hashes the stage's input files (fingerprints), its part of the config and
of the run options, the keys of the stages it reads from, centile's version and
a fingerprint of centile's own code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from centile import __version__
from centile.config import Config
from centile.io.outputs import Staging
from centile.pipeline.dag import dependencies, producers
from centile.pipeline.stage import Stage


def digest(doc: Any) -> str:
    return hashlib.blake2b(json.dumps(doc, sort_keys=True, default=str).encode(), digest_size=12).hexdigest()


def code_fingerprint() -> str:
    """A hash of centile's own code (engine, kernels, SQL): a changed installation never reuses
    outputs of another, even at the same version number."""
    import centile
    from centile import kernels, sql

    h = hashlib.blake2b(digest_size=12)
    for folder in (Path(centile.__file__).resolve().parent, Path(kernels.__file__).resolve().parent,
                   Path(sql.__path__[0]).resolve()):
        for f in sorted(folder.rglob("*.py")) + sorted(folder.rglob("*.sql")):
            h.update(f.relative_to(folder).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def stage_keys(stages: list[Stage], cfg: Config, fps: Mapping[str, list[dict[str, Any]]],
               options: Mapping[str, Any]) -> dict[str, str]:
    """Each stage's key; ``stages`` in run order (a stage's upstream keys come first)."""
    keys: dict[str, str] = {}
    code = code_fingerprint()
    made_by = producers(stages)
    for st in stages:
        needs, uses = dependencies(st, made_by)
        inputs = {t: [(f["path"], f["bytes"], f["fingerprint"]) for f in fps.get(t, [])] for t in st.tables}
        doc = {"stage": st.name, "version": __version__, "code": code, "inputs": inputs,
               "config": st.config(cfg), "after": [keys.get(a) for a in (*needs, *uses)]}
        if st.options is not None:
            doc["options"] = st.options(options)
        keys[st.name] = digest(doc)
    return keys


def previous_manifest(out: Path) -> dict[str, Any]:
    """The manifest of the ``centile run`` in ``out`` (empty when there is none)."""
    try:
        doc = json.loads((out / "manifest.json").read_text())
        return doc if doc.get("job") == "run" else {}
    except (OSError, ValueError):
        return {}


def reusable(prev_dir: Path, rec: Mapping[str, Any], key: str) -> bool:
    """Did the run in ``prev_dir`` compute this stage with the same key, and are its files there?"""
    files = rec.get("files") or []
    return (rec.get("key") == key and rec.get("status") in ("ran", "reused") and bool(files)
            and all((prev_dir / f).is_file() for f in files))


def link_files(prev_dir: Path, files: list[str], staging: Staging) -> None:
    """Hard-link (or copy, across file systems) a previous run's files into the staging folder."""
    for f in files:
        dest = staging.path(f)
        try:
            os.link(prev_dir / f, dest)
        except OSError:
            shutil.copy2(prev_dir / f, dest)
