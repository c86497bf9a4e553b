"""Safe reading of untrusted result trees: walk the given roots without following symlinks, read
regular files up to a size limit, decode them as UTF-8 text and parse JSON with bounded nesting.

What cannot be read is a `Skip` with the reason (a bad file never stops an ingest). Nothing is ever
unpickled, evaluated or loaded as YAML: this module hands back bytes, text and JSON values only.
"""

from __future__ import annotations

import errno
import io
import json
import os
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

MAX_FILE_BYTES = 200 * 2**20
#: The cap for what is parsed whole (a JSON document, SQL, text): parsing builds the whole tree in
#: memory, ~20x the file's size for JSON. Larger CSV and JSON Lines files are streamed row by row up
#: to max_file_bytes.
MAX_DOCUMENT_BYTES = 32 * 2**20
#: Bytes read first to decide a file's format and encoding.
HEAD_BYTES = 64 * 1024
MAX_JSON_DEPTH = 64
DERIVED_FILES = frozenset({"runs.csv", "runs.parquet", "sweep.json", "multirun.yaml", "tokens.csv",
                           "telemetry.csv", "engine_load.log", "run.log", "drift.json"})
DERIVED_DIRS = frozenset({".hydra"})
TMP_PREFIX = ".tmp-"
# Folders that `harness analyze` / `harness report` write, recognised by their marker file.
DERIVED_OUTPUT_DIRS = {"report": "report.md", "analysis": "configurations.csv"}

_O_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


class Skip(Exception):
    """A file is not read, for the reason given; `kind` is "skipped" or "unrecognised"."""

    def __init__(self, reason: str, kind: str = "skipped"):
        super().__init__(reason)
        self.reason, self.kind = reason, kind


# --- walking -------------------------------------------------------------------------------------------

def walk(root: str):
    """(path, rel, lstat, skip_reason) for every entry worth reporting under `root`; never follows
    a symlink, never descends a directory twice (bind-mount loops)."""
    name = Path(root).name or root
    try:
        st = os.lstat(root)
    except OSError as e:
        yield root, name, None, os_reason(e)
        return
    if stat.S_ISLNK(st.st_mode):
        yield root, name, st, "symlink not followed"
        return
    if stat.S_ISREG(st.st_mode):
        yield root, name, st, name_rule(name)
        return
    if not stat.S_ISDIR(st.st_mode):
        yield root, name, st, "not a regular file"
        return
    visited = {(st.st_dev, st.st_ino)}
    stack = [(root, "")]
    while stack:
        dpath, drel = stack.pop()
        try:
            with os.scandir(dpath) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            yield dpath, drel or name, None, os_reason(e)
            continue
        subdirs = []
        for e in entries:
            rel = f"{drel}/{e.name}" if drel else e.name
            # Decided from the entry's type and name first: no stat for what is not read.
            try:
                if e.is_symlink():
                    yield e.path, rel, None, "symlink not followed"
                elif (why := name_rule(e.name)) is not None:
                    yield e.path, rel, None, why
                elif e.is_dir(follow_symlinks=False) and derived_output_dir(e):
                    yield e.path, rel, None, "derived harness file"
                elif e.is_dir(follow_symlinks=False):
                    est = e.stat(follow_symlinks=False)
                    if (est.st_dev, est.st_ino) in visited:
                        yield e.path, rel, est, "directory already visited"
                    else:
                        visited.add((est.st_dev, est.st_ino))
                        subdirs.append((e.path, rel))
                elif e.is_file(follow_symlinks=False):
                    yield e.path, rel, e.stat(follow_symlinks=False), None
                else:
                    yield e.path, rel, None, "not a regular file"
            except OSError as err:
                yield e.path, rel, None, os_reason(err)
        stack.extend(reversed(subdirs))


def derived_output_dir(entry) -> bool:
    marker = DERIVED_OUTPUT_DIRS.get(entry.name)
    return marker is not None and os.path.isfile(os.path.join(entry.path, marker))


def name_rule(name: str) -> str | None:
    """Why a file or folder is not read, by its name alone (our own derived files), or None."""
    if name in DERIVED_FILES or name in DERIVED_DIRS:
        return "derived harness file"
    if name.startswith(TMP_PREFIX):
        return "temporary file of an interrupted write"
    return None


def os_reason(e: OSError) -> str:
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, FileNotFoundError):
        return "not found"
    return f"cannot read: {e.strerror or e}"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def read_bytes(path: str, limit: int) -> bytes:
    """At most `limit` bytes of a regular file; a symlink swapped in after the walk is refused."""
    fd, st = _open_regular(path, limit)
    try:
        parts, total, want = [], 0, min(st.st_size, limit) + 1
        while total <= limit:  # the file may grow while we read it: never past the limit
            b = os.read(fd, want)
            if not b:
                break
            parts.append(b)
            total += len(b)
    finally:
        os.close(fd)
    if total > limit:
        raise Skip(f"larger than max_file_bytes (> {limit} bytes)")
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    return data


class Bounded(io.RawIOBase):
    """A read-only file that refuses to read past `limit` bytes (it may grow while read): reading
    beyond raises Skip. Owns the descriptor it was given."""

    def __init__(self, fd: int, limit: int):
        self.fd, self.limit, self.total = fd, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = os.readv(self.fd, [b])
        self.total += n
        if self.total > self.limit:
            raise Skip(f"larger than max_file_bytes (> {self.limit} bytes)")
        return n

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


def open_bounded(path: str, limit: int) -> tuple[Bounded, int]:
    """(reader, size) of a regular file opened without following a symlink, read at most up to
    `limit` bytes; Skip for what cannot be read (as read_bytes)."""
    fd, st = _open_regular(path, limit)
    return Bounded(fd, limit), st.st_size


def _open_regular(path: str, limit: int) -> tuple[int, os.stat_result]:
    """(descriptor, fstat) of a regular file of at most `limit` bytes, opened without following a
    symlink; Skip (and the descriptor closed) for anything else."""
    try:
        fd = os.open(path, _O_FLAGS)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise Skip("symlink not followed") from None
        raise Skip(os_reason(e)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Skip("not a regular file")
        if st.st_size > limit:
            raise Skip(f"larger than max_file_bytes ({st.st_size} > {limit} bytes)")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def check_head(head: bytes) -> int:
    """Skip for the start of a file that is not UTF-8 text (see decode); else the offset of its
    text (3 after a UTF-8 BOM)."""
    if not head:
        raise Skip("empty file")
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        raise Skip("not UTF-8 (UTF-32 BOM)")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise Skip("not UTF-8 (UTF-16 BOM)")
    start = 3 if head.startswith(b"\xef\xbb\xbf") else 0
    body = head[start:8192 + start]
    if b"\x00" in body:
        if len(body) >= 8 and not any(body[1::2][:64]):
            raise Skip("not UTF-8 (looks like UTF-16 LE without BOM)")
        if len(body) >= 8 and not any(body[0::2][:64]):
            raise Skip("not UTF-8 (looks like UTF-16 BE without BOM)")
        raise Skip("binary file")
    if not head[start:].strip():
        raise Skip("empty file (whitespace only)")
    return start


# --- decoding -------------------------------------------------------------------------------------------

def decode(data: bytes) -> str:
    if not data:
        raise Skip("empty file")
    if data.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        raise Skip("not UTF-8 (UTF-32 BOM)")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise Skip("not UTF-8 (UTF-16 BOM)")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    head = data[:8192]
    if b"\x00" in head:
        if len(head) >= 8 and not any(head[1::2][:64]):
            raise Skip("not UTF-8 (looks like UTF-16 LE without BOM)")
        if len(head) >= 8 and not any(head[0::2][:64]):
            raise Skip("not UTF-8 (looks like UTF-16 BE without BOM)")
        raise Skip("binary file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Skip(f"not UTF-8 (invalid byte at offset {e.start})") from None
    if not text.strip():
        raise Skip("empty file (whitespace only)")
    return text


_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth_ok(data: bytes) -> bool:
    """False when brackets outside strings nest deeper than MAX_JSON_DEPTH (checked on the raw
    UTF-8 bytes before parsing, so a hostile file cannot exhaust the parser's recursion)."""
    if data.count(b"[") + data.count(b"{") <= MAX_JSON_DEPTH:  # cheap bound: most files stop here
        return True
    if b"\\" in data:  # escapes: drop escaped backslashes, then escaped quotes
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    depth = 0
    for ch in b"".join(data.split(b'"')[0::2]).translate(None, _NOT_BRACKET):  # outside strings
        if ch in b"[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return False
        else:
            depth -= 1
    return True


def parse_json(text: str) -> tuple[Any, str | None, str | None]:
    """(value, error, note): a JSON document, or a list of objects for JSON Lines (a truncated last
    line is dropped with a note, as an interrupted writer leaves it)."""
    try:
        # orjson parses ~4x faster, which is most of ingest for large sweeps; it refuses the
        # NaN/Infinity literals some tools write, which the standard parser then takes.
        return orjson.loads(text), None, None
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(text), None, None
    except RecursionError:
        return None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels", None
    except json.JSONDecodeError as e:
        end = len(text.rstrip())
        first_error = (f"truncated JSON (ends inside a value at char {end})" if e.pos >= end
                       else f"invalid JSON ({e})")
    except ValueError as e:  # e.g. an integer too long to convert
        first_error = f"invalid JSON ({e})"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2 or not is_json(lines[0]):  # not JSON Lines: report the document's error
        return None, first_error, None
    out = []
    for i, ln in enumerate(lines):
        try:
            out.append(json.loads(ln))
        except ValueError as e:
            if i == len(lines) - 1 and out:
                return out, None, "last line truncated, dropped"
            return None, f"invalid JSON Lines (line {i + 1}: {e})", None
    return out, None, None


def is_json(s: str) -> bool:
    try:
        json.loads(s)
    except ValueError:
        return False
    return True
