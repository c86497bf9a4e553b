"""A full disk during a real sweep: the sweep stops with one line naming the file and the
reason, earlier results stay whole and valid, no partial run.json and no temporary file is left,
and a re-run once there is space measures only the missing points.

The disk is filled at the operating-system boundary: a small LD_PRELOAD library (built here
with the system compiler) makes write() fail with ENOSPC for files under the sweep folder once
the first point's run.json is in place, so every writer (the harness, Hydra, logging) sees what
it would see on a full disk. Unprivileged tests cannot mount a small tmpfs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from conftest import TINY, load_schema, run_harness, run_records

pytestmark = pytest.mark.slow

# write()/writev()/pwrite() to a file under $FAULT_ENOSPC_DIR fail with ENOSPC once
# $FAULT_ENOSPC_AFTER (default 1) run.json files were renamed into place under it. With
# FAULT_ENOSPC_ON=tmp the disk fills at the first write to a temporary file after that (during
# the next point's measurement, after Hydra wrote the job's own files); otherwise at the next
# write of any kind (Hydra's files of the next job). Once full, it stays full.
SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static const char *dir;
static size_t dirlen;
static int after = 1, on_tmp, renamed, armed, ready;

static void init(void) {
    if (ready) return;
    ready = 1;
    dir = getenv("FAULT_ENOSPC_DIR");
    dirlen = dir ? strlen(dir) : 0;
    if (getenv("FAULT_ENOSPC_AFTER")) after = atoi(getenv("FAULT_ENOSPC_AFTER"));
    on_tmp = getenv("FAULT_ENOSPC_ON") && strcmp(getenv("FAULT_ENOSPC_ON"), "tmp") == 0;
}

static int under(const char *path) {
    return dir && strncmp(path, dir, dirlen) == 0 && (path[dirlen] == '/' || path[dirlen] == 0);
}

static int full(int fd) {
    init();
    if (!dir || renamed < after) return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) return 0;
    path[n] = 0;
    if (!under(path)) return 0;
    const char *base = strrchr(path, '/');
    if (!armed && (!on_tmp || (base && strncmp(base + 1, ".tmp-", 5) == 0))) armed = 1;
    return armed;
}

ssize_t write(int fd, const void *buf, size_t n) {
    static ssize_t (*real)(int, const void *, size_t);
    if (!real) real = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    if (full(fd)) { errno = ENOSPC; return -1; }
    return real(fd, buf, n);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    static ssize_t (*real)(int, const struct iovec *, int);
    if (!real) real = (ssize_t (*)(int, const struct iovec *, int))dlsym(RTLD_NEXT, "writev");
    if (full(fd)) { errno = ENOSPC; return -1; }
    return real(fd, iov, cnt);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real) real = (ssize_t (*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
    if (full(fd)) { errno = ENOSPC; return -1; }
    return real(fd, buf, n, off);
}

int rename(const char *src, const char *dst) {
    static int (*real)(const char *, const char *);
    if (!real) real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    int r = real(src, dst);
    init();
    size_t len = strlen(dst);
    if (r == 0 && under(dst) && len >= 9 && strcmp(dst + len - 9, "/run.json") == 0) renamed++;
    return r;
}
"""

POINTS = ["sampling.temperature=0.2,1.0", "runtime.n_threads=1"]  # one load, two points


@pytest.fixture(scope="module")
def enospc_lib(tmp_path_factory):
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler to build the full-disk library")
    d = tmp_path_factory.mktemp("enospc")
    (d / "enospc.c").write_text(SHIM_C)
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(d / "libenospc.so"),
                    str(d / "enospc.c"), "-ldl"], check=True, capture_output=True)
    return d / "libenospc.so"


def _full_disk_run(tmp_path, lib, on: str, extra: tuple[str, ...] = ()):
    sweep = (tmp_path / "res").resolve() / "s"
    args = ["run", "-m", *POINTS, *TINY, *extra, "report.auto=false", f"results_dir={sweep.parent}", "sweep_name=s"]
    env = {"LD_PRELOAD": str(lib), "FAULT_ENOSPC_DIR": str(sweep), "FAULT_ENOSPC_ON": on}
    return sweep, args, run_harness(*args, cwd=tmp_path, env=env)


def _assert_left_whole(sweep, first_temperature: float | None = None):
    """The first finished point's result is whole and valid, the other left no run.json and
    nothing temporary, and sweep.json is still a whole, valid file."""
    import jsonschema

    recs = run_records(sweep)
    assert len(recs) == 1
    (rec,) = recs.values()
    jsonschema.validate(rec, load_schema())
    assert rec["status"] == "ok"
    if first_temperature is not None:
        assert rec["config"]["sampling"]["temperature"] == first_temperature
    assert len([p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")]) == 2
    assert not list(sweep.rglob(".tmp-*"))
    jsonschema.validate(json.loads((sweep / "sweep.json").read_text()), load_schema("sweep.schema.json"))
    return rec


def test_disk_full_while_measuring_stops_with_one_line(tmp_path, enospc_lib, model_path):
    """The disk fills after the first point's run.json (the sweep runs in rounds: the two points
    are interleaved, so the other point is finishing): its files, then its run.json, cannot be
    written; the sweep stops there (exit 1) instead of measuring points whose results would be
    lost, and says so in one line naming that run.json."""
    sweep, args, r = _full_disk_run(tmp_path, enospc_lib, on="tmp")
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "Logging error" not in r.stderr, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: cannot write ")]
    assert len(errors) == 1, r.stderr[-3000:]
    assert errors[0].endswith("/run.json: No space left on device")
    assert r.stderr.strip().splitlines()[-1].startswith("interrupted (results not written): 1 ok, 0 failed")
    first = _assert_left_whole(sweep)
    other = 1.0 if first["config"]["sampling"]["temperature"] == 0.2 else 0.2
    assert f"sampling.temperature={other}," in errors[0]  # the point that could not be written
    # Space again: the re-run measures only the missing point.
    again = run_harness(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.strip().splitlines()[-1] == "1 ok, 0 failed, 1 skipped"
    recs = run_records(sweep)
    assert {x["status"] for x in recs.values()} == {"ok"} and len(recs) == 2
    assert first["run_id"] in {x["run_id"] for x in recs.values()}


def test_disk_full_when_the_next_job_starts(tmp_path, enospc_lib, model_path):
    """The disk is full before the second job starts: Hydra cannot write that job's own files and
    stops the sweep (its short error, then the harness's line with the reason); the first result
    stays, nothing partial is left, exit 1. Hydra's basic launcher (one point after the other)
    starts a job after a result: the rounds launcher starts every job in its first round."""
    sweep, _, r = _full_disk_run(tmp_path, enospc_lib, on="any", extra=("hydra/launcher=basic",))
    assert r.returncode == 1, r.stderr[-3000:]
    assert "No space left on device" in r.stderr
    assert "Logging error" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(
        "interrupted (results not written: No space left on device): 1 ok, 0 failed"), r.stderr[-3000:]
    _assert_left_whole(sweep, first_temperature=0.2)
