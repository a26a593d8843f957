"""One measured step of ``centile bench``: a fresh Python process, its wall time and its own peak RSS."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from centile.errors import CentileError

#: prepended to every child's code: at exit the child reports the peak RSS of its own address space
#: (also the benchmarks' children: ``benchmarks/_common.py``)
PEAK = """
import atexit as _atexit, sys as _sys
def _centile_peak():
    try:
        with open("/proc/self/status") as _f:
            _kb = next(int(_l.split()[1]) for _l in _f if _l.startswith("VmHWM:"))
        _sys.stderr.write(f"\\n__centile_vmhwm_kb__ {_kb}\\n")
        _sys.stderr.flush()
    except (OSError, StopIteration):
        pass
_atexit.register(_centile_peak)
"""

#: the ``centile`` command itself (every registered command, as the console script has them)
CENTILE = "import sys; sys.argv[0] = 'centile'; from centile.cli import main; main()"

_MARK = "__centile_vmhwm_kb__ "


class BenchError(CentileError):
    """A measured step failed (its exit code and the end of its error output are in the message)."""


@dataclass(frozen=True)
class ChildRun:
    """What one child process did."""

    wall_s: float
    peak_rss_mb: float | None
    stdout: str
    stderr: str
    #: user + system CPU seconds of the child (all its threads): on a shared machine the wall
    #: time also counts the waits for a core, the CPU time does not
    cpu_s: float | None = None


def run_child(code: str, args: Sequence[str], *, what: str, env: Mapping[str, str] | None = None) -> ChildRun:
    """Run ``code`` with ``args`` in a fresh Python process and wait for it.

    ``peak_rss_mb`` is the child's own ``VmHWM`` (from ``/proc``), so pages shared with this
    process between fork and exec are not counted (``ru_maxrss`` would count them); it falls
    back to ``ru_maxrss`` where ``/proc`` says nothing. Raises :class:`BenchError` naming
    ``what`` when the child exits with a non-zero code.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen([sys.executable, "-c", PEAK + code, *args], stdout=out, stderr=err, text=True,
                             env=full_env)
        try:
            _pid, status, usage = os.wait4(p.pid, 0)
        except KeyboardInterrupt:
            p.kill()
            p.wait()
            raise
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    kb = [int(line.split()[1]) for line in stderr.splitlines() if line.startswith(_MARK)]
    stderr = "\n".join(line for line in stderr.splitlines() if not line.startswith(_MARK)).strip()
    if p.returncode != 0:
        tail = stderr[-2000:] or stdout[-2000:]
        if p.returncode < 0:
            import signal

            sig = signal.Signals(-p.returncode).name if -p.returncode in signal.valid_signals() else p.returncode
            why = (" (usually the kernel's out-of-memory killer; free memory, measure fewer "
                   "customers or pass --memory-limit)" if p.returncode == -signal.SIGKILL else "")
            raise BenchError(f"{what} was killed by signal {sig}{why}; its last output:\n{tail}")
        raise BenchError(f"{what} failed with exit code {p.returncode}:\n{tail}")
    peak = (kb[-1] if kb else usage.ru_maxrss) / 1024
    return ChildRun(wall, round(peak, 1) if peak else None, stdout, stderr,
                    round(usage.ru_utime + usage.ru_stime, 3))
