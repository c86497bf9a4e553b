"""The engine worker process: `python -m harness.engine.worker FD PARENT_PID`.

Started by supervisor.WorkerEngine with one end of a socket pair as FD. It serves engine requests
(backend.serve) until the supervisor closes the connection. It dies with its supervisor (Linux
PR_SET_PDEATHSIG), and leaves SIGINT, SIGTERM and SIGUSR2 to it: Ctrl-C, `kill`, and Slurm's
time-limit warning and scancel (which signal every process of the job) reach the sweep process,
which decides, records the point and stops the worker (SIGKILL).
"""

from __future__ import annotations

import os
import signal
import sys


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the supervisor died before the line above took effect
        os._exit(1)


def main(argv: list[str]) -> int:
    fd, parent_pid = int(argv[0]), int(argv[1])
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    from multiprocessing.connection import Connection

    from . import llama
    from .backend import serve

    try:
        llama._llama_cpp()  # loaded before the first request (a started-ahead worker is ready)
    except Exception:  # noqa: BLE001 - the load request reports it, as the point's error
        pass
    serve(Connection(fd))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
