"""Tests for harness.engine.mapping: the model file's mappings read from smaps."""

from __future__ import annotations

import mmap
import os

from harness.engine.mapping import model_mapping


def _smaps(path, entries) -> str:
    """An smaps text: for each (file?, size kB, rss kB, pmd kB), one mapping of `path` or anonymous."""
    st = os.stat(path)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    out, addr = [], 0x7F0000000000
    for is_file, size, rss, pmd in entries:
        head = f"{addr:x}-{addr + size * 1024:x} r--s 00000000 " + (f"{dev} {st.st_ino}      {path}" if is_file
                                                                      else "00:00 0 ")
        out += [head, f"Size:           {size} kB", f"Rss:            {rss} kB", "AnonHugePages:         0 kB",
                f"FilePmdMapped:  {pmd} kB", "VmFlags: rd sh mr mw me ms sd"]
        addr += size * 1024
    return "\n".join(out) + "\n"


def test_shares_are_summed_over_the_files_mappings_only(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(4096))
    smaps = tmp_path / "smaps"
    smaps.write_text(_smaps(model, [(True, 4096, 4096, 2048), (False, 8192, 8192, 8192), (True, 2048, 1024, 0)]))
    m = model_mapping(str(model), True, smaps=str(smaps))
    assert m == {"mmap": True, "mapped_mib": 6.0, "resident_mib": 5.0, "huge_mib": 2.0, "huge_share": 0.333}


def test_without_mmap_or_without_a_mapping(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(4096))
    assert model_mapping(str(model), False) == {"mmap": False}
    smaps = tmp_path / "smaps"
    smaps.write_text(_smaps(model, [(False, 4096, 4096, 0)]))
    assert model_mapping(str(model), True, smaps=str(smaps)) is None  # the file is not mapped
    assert model_mapping(str(tmp_path / "missing.gguf"), True) is None


def test_this_process_sees_its_own_mapping(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(bytes(1 << 20))
    with open(model, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
        assert mm[0] == 0  # touched: resident
        m = model_mapping(str(model), True)
    assert m is not None and m["mmap"] and m["mapped_mib"] == 1.0 and 0 <= m["huge_share"] <= 1
