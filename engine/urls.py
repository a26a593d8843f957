"""Inputs named by fsspec URLs (``s3://bucket/orders/``, ``gs://…``, ``abfs://…``, ``file:///…``,
``memory://…``) beside plain paths.

A table's ``path`` (or the config's ``data`` folder) may be a URL. Listing, globbing and fingerprints
go through the URL's fsspec filesystem; DuckDB reads the files through the same filesystem,
registered on each connection (:func:`register`), so validation and every query read them as they
read local files. Credentials and options come from fsspec's own configuration (environment
variables such as ``AWS_PROFILE``, ``~/.config/fsspec/``), on the client and on every Dask worker.

fsspec is imported only when a URL is used; the protocol's package (s3fs, gcsfs, adlfs) is the
user's to install. ``memory://`` lives in one process: fine for the DuckDB backend and for tests,
refused by the Dask backend, whose workers are other processes.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from centile.errors import ConfigError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def is_url(path: object) -> bool:
    """Is ``path`` an fsspec URL (``protocol://…``) rather than a local path?"""
    return isinstance(path, str) and bool(_URL.match(path))


def mangled(path: object) -> bool:
    """Is ``path`` a URL that went through :class:`pathlib.Path` (``s3://b/x`` -> ``s3:/b/x``)?"""
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/", str(path))) and not is_url(str(path))


def protocol(url: str) -> str:
    return url.split("://", 1)[0].lower()


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path inside it; a :class:`ConfigError` naming the
    package to install when fsspec or the protocol's implementation is missing."""
    try:
        import fsspec
    except ImportError:
        raise ConfigError(f"{url}: reading URLs needs fsspec, which is not installed: pip install fsspec "
                          "(plus the protocol's package: s3fs, gcsfs or adlfs), or use a local path") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"{url}: no fsspec filesystem for {protocol(url)}:// ({exc}); install its package "
                          "(s3fs for s3://, gcsfs for gs://, adlfs for abfs://) on this machine and on every "
                          "worker") from None


def full(fs: Any, path: str) -> str:
    """``path`` of ``fs`` as a URL again, in the form DuckDB reports file names (``memory:///a/b``)."""
    return fs.unstrip_protocol(path)


def normal(url: str) -> str:
    """``url`` in the form DuckDB reports file names (``memory://a/b`` -> ``memory:///a/b``)."""
    fs, path = filesystem(url)
    return full(fs, path)


def isdir(url: str) -> bool:
    fs, path = filesystem(url)
    return bool(fs.isdir(path))


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return bool(fs.exists(path))


def glob(pattern: str) -> list[str]:
    """The files matching ``pattern`` (``*``, ``?``, ``[…]``, ``**``), sorted, as URLs."""
    fs, path = filesystem(pattern)
    return sorted(full(fs, p) for p in fs.glob(path) if fs.isfile(p))


def files(url: str) -> list[str]:
    """The files under a folder URL (recursively), sorted, as URLs."""
    fs, path = filesystem(url)
    return sorted(full(fs, p) for p in fs.find(path))


def size(url: str) -> int:
    fs, path = filesystem(url)
    return int(fs.size(path))


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])


def register(con: Any, paths: list[str]) -> list[str]:
    """Register the fsspec filesystem of every URL in ``paths`` on the DuckDB connection ``con`` and
    return :func:`prefixes` of them, for ``allowed_directories``."""
    seen: set[str] = set()
    for url in paths:
        if is_url(url) and protocol(url) not in seen:
            seen.add(protocol(url))
            con.register_filesystem(filesystem(url)[0])
    return prefixes(paths)


def prefixes(paths: list[str]) -> list[str]:
    """The folders of the URLs in ``paths`` (a glob's folder before its first wildcard), as URL prefixes
    ending in ``/``, in DuckDB's form of file names."""
    out = []
    for url in paths:
        if not is_url(url):
            continue
        fs, path = filesystem(url)
        wild = [path.index(ch) for ch in "*?[" if ch in path]
        base = path[:min(wild)] if wild else path
        base = base if fs.isdir(base) else base.rsplit("/", 1)[0]
        out.append(full(fs, base.rstrip("/")) + "/")
    return out


def fingerprint(url: str, *, full_hash_limit: int = 64 << 20) -> dict[str, Any]:
    """Size, modification time (when the store has one) and a content fingerprint of one file, as
    :func:`centile.io.outputs.fingerprint` gives for a local file (whole up to ``full_hash_limit``
    bytes, else the first and last 4 MiB and the size)."""
    fs, path = filesystem(url)
    info = fs.info(path)
    n = int(info.get("size") or 0)
    h = hashlib.blake2b(digest_size=16)
    with fs.open(path, "rb") as fh:
        if n <= full_hash_limit:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
            kind = "blake2b"
        else:
            h.update(fh.read(4 << 20))
            fh.seek(n - (4 << 20))
            h.update(fh.read(4 << 20))
            h.update(str(n).encode())
            kind = "blake2b-head-tail"
    mtime = None
    try:
        mtime = int(fs.modified(path).timestamp())
    except (NotImplementedError, AttributeError, OSError, KeyError, TypeError):
        pass
    return {"path": url, "bytes": n, "mtime": mtime, "fingerprint": f"{kind}:{h.hexdigest()}"}
