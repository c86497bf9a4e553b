"""The `experiment` section of a composed config: known keys per experiment and their checks.

Pure, like config.validate(): nothing is loaded or probed. Every error is a ConfigError naming the
key path, the value and what is allowed, which the CLI prints as one line (exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..config import ConfigError

THREADS_SPLIT = "split"

# experiment name -> its keys (besides the common ones)
_COMMON = ("name", "repetitions", "warmup")
KEYS = {
    "concurrent_agents": _COMMON + ("k", "threads_per_agent"),
    "agent_ab": _COMMON + ("source", "variants"),
}
VARIANTS = ("A", "B")


@dataclass(frozen=True)
class ConcurrentSpec:
    repetitions: int
    warmup: int
    k: tuple[int, ...]  # ascending, unique, starting with 1
    threads_per_agent: str | int  # "split" (physical cores // K, at least 1) or a fixed count


@dataclass(frozen=True)
class AgentABSpec:
    repetitions: int
    warmup: int
    source: str | None  # results folder to analyse; None: the newest sweep under results_dir
    variants: dict  # "A"/"B" -> tuple of Hydra overrides


def check_override_keys(name: str, overrides) -> None:
    """Refuse `experiment.<key>=...` overrides whose key the experiment does not have, before
    Hydra composes (its own message for that runs over several lines)."""
    for o in overrides:
        key, _, value = o.partition("=")
        key = key.lstrip("+~")
        if key.startswith("experiment."):
            sub = key.split(".")[1]
            if sub not in KEYS[name]:
                raise ConfigError(key, value, f"is not a key of experiment {name}; known: {', '.join(KEYS[name])}")


def _int(e: Mapping, key: str, minimum: int) -> int:
    v = e.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"experiment.{key}", v, f"must be an integer >= {minimum}")
    return v


def validate(cfg: Mapping[str, Any], name: str):
    """The typed spec of experiment `name` from a composed config; raises ConfigError."""
    e = cfg.get("experiment")
    if not isinstance(e, Mapping):
        raise ConfigError("experiment", e, "must be a config group (compose with +experiment=NAME)")
    for k in e:
        if k not in KEYS[name]:
            raise ConfigError(f"experiment.{k}", e[k], f"is not a key of experiment {name}; known: {', '.join(KEYS[name])}")
    if e.get("name") != name:
        raise ConfigError("experiment.name", e.get("name"), f"must be {name!r} (the experiment's own name)")
    reps, warmup = _int(e, "repetitions", 1), _int(e, "warmup", 0)
    if name == "concurrent_agents":
        ks = e.get("k")
        if isinstance(ks, int) and not isinstance(ks, bool):
            ks = [ks]
        if (not isinstance(ks, (list, tuple)) or not ks
                or not all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 64 for x in ks)):
            raise ConfigError("experiment.k", ks, "must be a list of agent counts between 1 and 64, e.g. [1, 2, 4]")
        if 1 not in ks:
            raise ConfigError("experiment.k", ks, "must include 1 (the speedup is relative to one agent)")
        t = e.get("threads_per_agent", THREADS_SPLIT)
        if t != THREADS_SPLIT and (isinstance(t, bool) or not isinstance(t, int) or t < 1):
            raise ConfigError("experiment.threads_per_agent", t,
                              f"must be {THREADS_SPLIT!r} (physical cores / K) or a positive integer")
        if cfg.get("bench", {}).get("ignore_eos") is False:
            raise ConfigError("bench.ignore_eos", False, "must be true for concurrent_agents: every agent "
                              "generates the same number of tokens")
        return ConcurrentSpec(repetitions=reps, warmup=warmup, k=tuple(sorted(set(ks))), threads_per_agent=t)
    src = e.get("source")
    if src is not None and (not isinstance(src, str) or not src.strip()):
        raise ConfigError("experiment.source", src, "must be a results folder path or null (the newest sweep)")
    v = e.get("variants")
    if not isinstance(v, Mapping) or set(v) != set(VARIANTS):
        raise ConfigError("experiment.variants", v, "must be a mapping with exactly the keys A and B")
    variants = {}
    for label in VARIANTS:
        ov = v[label]
        if isinstance(ov, Mapping):
            ov = [f"{k}={_hydra_value(x)}" for k, x in ov.items()]
        if not isinstance(ov, (list, tuple)) or not all(isinstance(x, str) and "=" in x for x in ov):
            raise ConfigError(f"experiment.variants.{label}", ov,
                              "must be a list of overrides like runtime.n_ctx=512 (or a mapping key: value)")
        bad = [x for x in ov if x.split("=", 1)[0].lstrip("+~").split(".")[0] in ("experiment", "hydra", "agent")]
        if bad:
            raise ConfigError(f"experiment.variants.{label}", bad[0], "must not override experiment.*, hydra.* or "
                              "agent.* (both variants do the same work: set agent.max_tokens for the experiment)")
        variants[label] = tuple(ov)
    return AgentABSpec(repetitions=reps, warmup=warmup, source=src, variants=variants)


def _hydra_value(x) -> str:
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "true" if x else "false"
    return str(x)
