"""Live progress of a sweep on stderr (rich): point i/N, repetition, and the last decode tok/s.

The sweeper (or a single run) calls `start(total)`; the runner reports points and repetitions.
With no terminal on stderr, nothing live is drawn and each finished point is one log line.
"""

from __future__ import annotations

import sys

_state: dict = {"progress": None, "task": None, "total": 0, "done": 0, "noted": set()}


def start(total: int) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    stop()
    console = Console(stderr=True)
    _state.update(total=total, done=0)
    if not console.is_terminal:
        return
    p = Progress(TextColumn("[bold]point"), MofNCompleteColumn(), BarColumn(), TimeElapsedColumn(),
                 TextColumn("{task.description}"), console=console, transient=False)
    _state["task"] = p.add_task("", total=total)
    _state["progress"] = p
    p.start()


def stop() -> None:
    p = _state.get("progress")
    if p is not None:
        p.stop()
    _state.update(progress=None, task=None)


def rep(job: str, phase: str, i: int, n: int, decode_tps: float | None) -> None:
    p = _state.get("progress")
    if p is None:
        return
    tps = f"  {decode_tps:6.1f} tok/s" if decode_tps else ""
    p.update(_state["task"], description=f"{phase} {i}/{n}{tps}")


def point_done(job: str, status: str) -> None:
    _state["done"] += 1
    p = _state.get("progress")
    if p is not None:
        p.update(_state["task"], advance=1, description=status)
    elif _state["total"]:
        print(f"point {_state['done']}/{_state['total']} {job}: {status}", file=sys.stderr, flush=True)


def note(message: str, key: str | None = None) -> None:
    """One line about the sweep (e.g. the performance twin a model runs on, made or found at
    pre-flight), said once per process and `key` (default: the message)."""
    k = key if key is not None else message
    if k in _state["noted"]:
        return
    _state["noted"].add(k)
    p = _state.get("progress")
    if p is not None:
        from rich.markup import escape

        p.console.print(escape(message))
    else:
        print(message, file=sys.stderr, flush=True)
