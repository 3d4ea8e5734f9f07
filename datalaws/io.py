"""Safe writes and tolerant reads shared by every command.

- ``atomic_write_text`` / ``atomic_write_bytes``: temp file in the target's folder, fsync,
  rename. The result has the mode a plain ``open(path, "w")`` would give (0644 under the
  usual umask 022), not ``mkstemp``'s private 0600: on a shared cluster folder other users
  must be able to read reports and records.
- ``building_dir``: build a folder under a temporary name next to its final place and rename
  it on success, so a failure or an interrupt never leaves a half-built store or tokenizer
  that a later run would silently reuse.
- ``dumps_json``: JSON that never holds NaN/inf (invalid JSON): they become ``null`` and the
  top-level object lists them under ``"_nonfinite"`` (path -> "nan" / "inf" / "-inf").
- ``read_jsonl``: a JSON-lines file whose last line may be half-written (a SIGKILL mid-write);
  that line is dropped, a bad line anywhere else is an error naming the line.
- ``check_output_file`` / ``check_output_dir``: refuse before work (existing output without
  ``--force``, a folder where a file is expected, an unwritable place, a wrong extension).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["OutputError", "atomic_write_text", "atomic_write_bytes", "building_dir",
           "dumps_json", "read_jsonl", "check_output_file", "check_output_dir", "file_mode",
           "dir_mode", "NONFINITE_KEY", "TABLE_SUFFIXES", "write_table", "loads_json"]

NONFINITE_KEY = "_nonfinite"
TABLE_SUFFIXES = (".csv", ".parquet")
_umask_lock = threading.Lock()


class OutputError(ValueError):
    """An output path that cannot or must not be written; the message names it."""


def _umask() -> int:
    with _umask_lock:  # os.umask can only be read by setting it
        m = os.umask(0o022)
        os.umask(m)
    return m


def file_mode() -> int:
    """The mode a new file gets from ``open``: 0666 minus the umask (0644 under 022)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode a new folder gets from ``mkdir``: 0777 minus the umask (0755 under 022)."""
    return 0o777 & ~_umask()


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same dir + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())  # mkstemp creates 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # so the rename itself survives a crash
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, with the umask's file mode."""
    return atomic_write_bytes(path, text.encode())


@contextlib.contextmanager
def building_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``final``; rename it to ``final`` on success.

    ``final`` must not exist (callers check and refuse first). On any exception, including
    KeyboardInterrupt, the temporary folder is removed and ``final`` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        os.chmod(tmp, dir_mode())  # mkdtemp creates 0700
        yield tmp
        os.rename(tmp, final)  # fails (does not merge) if final appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(final.parent)


def _clean(x: Any, path: str, found: dict[str, str]) -> Any:
    if isinstance(x, dict):
        return {k: _clean(v, f"{path}/{k}", found) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v, f"{path}/{i}", found) for i, v in enumerate(x)]
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):  # numpy scalars and arrays
        return _clean(x.tolist(), path, found)
    if isinstance(x, float) and not math.isfinite(x):
        found[path or "/"] = "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
        return None
    return x


def dumps_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that writes NaN/inf as null, flagged under ``"_nonfinite"``.

    A JSON object at the top gets ``"_nonfinite": {"/loss": "nan", ...}`` when it had any;
    anything else cannot carry the flag, so non-finite values in it are an error.
    """
    found: dict[str, str] = {}
    clean = _clean(obj, "", found)
    if found:
        if not isinstance(clean, dict):
            raise ValueError(f"non-finite numbers at {sorted(found)} in a JSON "
                             f"{type(obj).__name__}; they cannot be flagged")
        clean[NONFINITE_KEY] = found
    return json.dumps(clean, allow_nan=False, **kwargs)


def loads_json(text: str) -> Any:
    """Inverse of ``dumps_json``: the flagged nulls become NaN/inf again, the flag goes."""
    obj = json.loads(text)
    if not isinstance(obj, dict) or not isinstance(obj.get(NONFINITE_KEY), dict):
        return obj
    for path, kind in obj.pop(NONFINITE_KEY).items():
        *parents, last = path.strip("/").split("/")
        node = obj
        try:
            for k in parents:
                node = node[int(k)] if isinstance(node, list) else node[k]
            if isinstance(node, list):
                node[int(last)] = float(kind)
            else:
                node[last] = float(kind)
        except (KeyError, IndexError, ValueError, TypeError):
            continue  # a hand-edited file: leave that null alone
    return obj


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Rows of a JSON-lines file; a half-written last line (killed mid-write) is dropped."""
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            # only the very last line can be a torn write: every earlier one ended with "\n"
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1}: not valid JSON ({e.msg}); the file is "
                             "corrupt, not just cut short") from None
    return rows


def _writable_parent(path: Path, flag: str) -> None:
    parent = path.parent
    while not parent.exists():  # the nearest existing folder must let us create the rest
        if parent == parent.parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: folder {parent} is not writable")


def check_output_file(path: str | os.PathLike, *, force: bool = False, flag: str = "--out",
                      suffixes: Sequence[str] | None = None,
                      protect: Sequence[str] = ()) -> Path:
    """Refuse an output file before any work: wrong extension, a folder, an existing file
    without ``force``, an unwritable folder, or a file inside another artifact (a folder
    holding one of the ``protect`` marker files, e.g. a fit's summary.json)."""
    path = Path(path)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise OutputError(f"{flag} {path}: use a file name ending in {' or '.join(suffixes)}")
    if path.is_dir():
        raise OutputError(f"{flag} {path}: is a folder; give a file name")
    for m in protect:
        if (path.parent / m).exists():
            raise OutputError(f"{flag} {path}: {path.parent} holds {m} (another artifact); "
                              "write elsewhere")
    if path.exists() and not force:
        raise OutputError(f"{flag} {path}: exists; pass --force to overwrite it")
    _writable_parent(path, flag)
    return path


def check_output_dir(path: str | os.PathLike, *, force: bool = False,
                     flag: str = "--out") -> Path:
    """Refuse an output folder before any work: a file in its place, a non-empty existing
    folder without ``force``, or an unwritable parent."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path}: is a file, not a folder")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise OutputError(f"{flag} {path}: exists and is not empty; pass --force to "
                          "overwrite it")
    _writable_parent(path / "x", flag)
    return path


def write_table(df: Any, path: str | os.PathLike) -> Path:
    """Write a DataFrame atomically in the format its extension names (.csv or .parquet)."""
    import io

    path = Path(path)
    if path.suffix.lower() == ".parquet":
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return atomic_write_bytes(path, buf.getvalue())
    if path.suffix.lower() == ".csv":
        return atomic_write_text(path, df.to_csv(index=False))
    raise OutputError(f"{path}: use a file name ending in .csv or .parquet")
