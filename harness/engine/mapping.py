"""How the model file sits in memory after a load: a measured factor of decode speed.

With `runtime.use_mmap=true` (llama.cpp's default) the weights are the page cache of the model
file, mapped into the engine's process. The kernel maps that cache with 2 MiB entries only where it
holds the file in 2 MiB folios, and that depends on how the file was last written or read (one
file copied with large writes, the same bytes written in 64 KiB pieces, a cold read after a reboot),
not on the weights. On a CPU, decode reads every weight once per token, so TLB misses show: the
same 270M bytes decoded 4-9% slower from the installed file (25% mapped with 2 MiB pages) than
from a fresh copy (99%) in interleaved benchmarks (benchmarks/test_twin_fidelity.py). run.json
records the share (`load.mapping`) so that two runs that differ in it are not read as a change of
the engine.

`/proc/self/smaps` is read in the process that loaded the model (the engine worker), right after
the load: llama.cpp populates the mapping at load (MAP_POPULATE), so every page is resident then.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")
MIB = 1 << 20


def model_mapping(model_path: str, use_mmap: bool, smaps: str = "/proc/self/smaps") -> dict | None:
    """The model file's mappings in this process: sizes in MiB and the share mapped with huge pages.

    {"mmap": False} when the weights were read into anonymous memory (use_mmap=false); None where
    the kernel does not say (no /proc, or the file is not found among the mappings)."""
    if not use_mmap:
        return {"mmap": False}
    try:
        target = os.stat(model_path)
        text = Path(smaps).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    sizes = {"Size": 0, "Rss": 0, "FilePmdMapped": 0}
    found = False
    inside = False
    for line in text.splitlines():
        if _HEADER.match(line):
            inside = _same_file(line, target)
            found = found or inside
        elif inside:
            head, _, rest = line.partition(":")
            if head in sizes:
                sizes[head] += int(rest.split()[0]) * 1024
    if not found or not sizes["Size"]:
        return None
    return {"mmap": True, "mapped_mib": round(sizes["Size"] / MIB, 1), "resident_mib": round(sizes["Rss"] / MIB, 1),
            "huge_mib": round(sizes["FilePmdMapped"] / MIB, 1),
            "huge_share": round(sizes["FilePmdMapped"] / sizes["Size"], 3)}


def _same_file(header: str, target: os.stat_result) -> bool:
    """Does an smaps mapping header (`start-end perms offset dev inode path`) map `target`?"""
    parts = header.split(None, 5)
    if len(parts) < 5:
        return False
    try:
        inode = int(parts[4])
        return inode != 0 and inode == target.st_ino and _dev(parts[3]) == target.st_dev
    except ValueError:
        return False


def _dev(field: str) -> int:
    major, minor = (int(x, 16) for x in field.split(":"))
    return os.makedev(major, minor)
