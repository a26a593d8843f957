"""The SQL files must be found from a clone (editable install) and from an installed wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from centile.io.sqlfiles import read_sql, sql_names

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.stem for p in (ROOT / "sql").glob("*.sql"))


def test_sql_found_from_the_clone():
    assert sql_names() == SHIPPED
    assert "SELECT" in read_sql("features")


def test_every_sql_file_has_a_header_comment():
    for name in SHIPPED:
        lines = (ROOT / "sql" / f"{name}.sql").read_text().splitlines()
        header = "\n".join(line for line in lines[: next(i for i, ln in enumerate(lines) if not ln.startswith("--"))])
        for key in ("-- purpose", "-- grain", "-- input", "-- params", "-- output"):
            assert key in header, f"{name}.sql: header lacks {key}"


@pytest.mark.slow
def test_sql_found_from_an_installed_wheel(tmp_path):
    dist = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-w", str(dist), str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(dist.glob("centile-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"centile/sql/{n}.sql" for n in SHIPPED} <= set(names)
    assert "centile/kernels/_flags.py" in names and "centile/examples/completejourney.toml" in names
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target),
                        str(wheel)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import centile.io.sqlfiles as s; "
            "assert s.__file__.startswith(sys.argv[1]), s.__file__; print(','.join(s.sql_names()))")
    r = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().split(",") == SHIPPED
