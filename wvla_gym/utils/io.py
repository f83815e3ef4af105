"""THE file-writing helpers: atomic writes (text, JSON, any writer) and JSON reads that name the file.

Every resumable job relies on one rule: a kill at any moment leaves the old file or the complete new one, never
a torn one. All writers here create a unique temp file beside the target (so concurrent writers never share one
and a rename never crosses file systems), fsync it and ``os.replace`` it onto the target. Temp names start with
``.`` so folder scans (the recorder's staging, checkpoint lookups) skip the leftovers of a kill.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write", "atomic_write_json", "atomic_write_text", "read_json"]

# mkstemp creates 0600 files; results are meant to be shared like any file the process creates, so the rename
# target gets the usual mode (0666 minus the umask), read once here because os.umask can only be read by setting.
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temp path beside ``path`` for a writer that wants a file name (HDF5, safetensors); on a
    clean exit it is fsync'ed and renamed onto ``path``, on an exception (or a kill) ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | os.PathLike, fill: Callable[[IO[Any]], Any], *, binary: bool = False) -> None:
    """Let ``fill(f)`` write an open temp file beside ``path``, then rename it onto ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
        fill(f)
        f.flush()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(text))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, newline: bool = True, **dumps_kwargs: Any) -> None:
    """``json.dumps(obj, **dumps_kwargs)`` (plus a final newline unless ``newline=False``) written atomically."""
    atomic_write_text(path, json.dumps(obj, **dumps_kwargs) + ("\n" if newline else ""))


def read_json(path: str | os.PathLike) -> Any:
    """Parse the JSON file ``path``; a missing or malformed file raises an error that names it."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{p} does not exist; expected a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{p} is not valid JSON ({e}); expected a JSON file") from e
