"""Writing results: atomic files, safe job-folder names, the sweep-level index.

A run folder is created by Hydra (it writes `.hydra/` first); inside it every file is written to
a temporary name and renamed into place, and `run.json` is written last, so a folder without a
valid `run.json` is never a result. Temporary names start with `.tmp-` and are ignored on read.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

RUN_FILE = "run.json"
TOKENS_FILE = "tokens.csv"
SWEEP_FILE = "sweep.json"
MAX_JOB_NAME = 120
_UMASK = os.umask(0)
os.umask(_UMASK)


class ResultNotWritten(BaseException):
    """A point's run.json could not be written (disk full, read-only file system, quota). Its
    result is lost and every later point's would be too, so the sweep stops: like Ctrl-C it is a
    BaseException, which passes Hydra's per-job `except Exception` and reaches the CLI. `str()`
    is the one-line message, naming the file and the system's reason."""

    def __init__(self, error: OSError):
        self.error = error
        super().__init__(f"cannot write {error.filename}: {error.strerror or error}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part.

    On failure the temporary file is removed and the OSError names `path` (a failed write() or
    fsync() names no file of its own)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are for sharing
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.errno is not None and e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+%@-]")


def job_dirname(override_dirname: str | None) -> str:
    """A readable folder name for a job from its overrides, safe to join under the sweep folder.

    Separators, control characters and anything unusual become '_'; the result is never '.', '..'
    or hidden, and long names are cut and given a hash suffix so distinct jobs stay distinct.
    """
    raw = override_dirname or ""
    name = _UNSAFE.sub("_", raw).strip("._") or "default"
    if raw and (len(name) > MAX_JOB_NAME or name != raw):
        # Two different override strings must not land in one folder after sanitising.
        digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        name = name[: MAX_JOB_NAME - 9].rstrip("._") + "-" + digest
    return name


def read_run(job_dir: Path) -> dict | None:
    """The run.json of a job folder, or None when it is missing or unreadable."""
    try:
        with open(job_dir / RUN_FILE, encoding="utf-8") as f:
            d = json.load(f)
        return d if isinstance(d, dict) else None
    except (OSError, ValueError):
        return None


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Job folders of a sweep (or the sweep folder itself for a single run written there)."""
    if not sweep_dir.is_dir():
        return []
    return sorted(p for p in sweep_dir.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and not p.is_symlink() and (p / RUN_FILE).is_file())
