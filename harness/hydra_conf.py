"""The Hydra side of the harness: where the config tree lives, the resolvers it uses, and
composing a config outside the CLI (for tools and tests) exactly as `harness run` would."""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Sequence

from .config import ConfigError


def conf_dir() -> str:
    """The config tree: `conf/` in a checkout, `harness/conf` inside an installed wheel."""
    from importlib.resources import files

    return str(files("harness.conf"))


def register_resolvers() -> None:
    """Resolvers the config tree uses; must be registered before Hydra composes anything."""
    from omegaconf import OmegaConf

    from .store import job_dirname

    if not OmegaConf.has_resolver("harness_jobdir"):
        OmegaConf.register_new_resolver("harness_jobdir", job_dirname)


def compose(overrides: Sequence[str] = ()) -> dict:
    """The composed config for `overrides` as plain data (without Hydra's own node), the same
    dict the runner validates. sweep_name defaults to "composed" so nothing depends on the clock."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    register_resolvers()
    args = list(overrides)
    if not any(a.split("=", 1)[0].lstrip("+~") == "sweep_name" for a in args):
        args.append("sweep_name=composed")
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=args)
    return to_plain(cfg)


def to_plain(cfg) -> dict:
    """A composed DictConfig as plain data, without Hydra's node (whose interpolations only
    resolve inside a running job)."""
    from omegaconf import OmegaConf

    d = OmegaConf.to_container(cfg, resolve=False)
    d.pop("hydra", None)
    return OmegaConf.to_container(OmegaConf.create(d), resolve=True)


@contextmanager
def compositions_shared():
    """Within the block, Hydra composes each distinct (config, overrides, mode) once. Hydra composes
    every point of a sweep three times (the pre-flight, the sweeper's check of each batch, the
    launcher), each time from the YAML files (about 80 ms a composition, 3 of them per point); a
    deep copy of a composed config takes about 7 ms. Every caller gets a copy of its own, so what one
    changes (the launcher sets hydra.job.id) no other sees. A composition that fails is not kept:
    it fails again, with its own error, for every caller."""
    import copy

    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    original = ConfigLoaderImpl.load_configuration
    done: dict = {}

    def load_configuration(self, config_name, overrides, run_mode, from_shell=True, validate_sweep_overrides=True):
        key = (id(self), config_name, tuple(overrides), run_mode, from_shell, validate_sweep_overrides)
        if key in done:  # the loader is kept with its result: its id cannot be reused meanwhile
            return copy.deepcopy(done[key][1])
        cfg = original(self, config_name, overrides, run_mode, from_shell, validate_sweep_overrides)
        done[key] = (self, copy.deepcopy(cfg))
        return cfg

    ConfigLoaderImpl.load_configuration = load_configuration
    try:
        yield
    finally:
        ConfigLoaderImpl.load_configuration = original


class CompositionError(ConfigError):
    """An override Hydra cannot apply (a key the config does not have, a config group option that
    does not exist, bad override syntax). `str()` is the one line the CLI prints."""

    def __init__(self, key: str, value: Any, message: str):
        ValueError.__init__(self, f"{key}: {message}")
        self.key, self.value, self.allowed = key, value, message


# What composing a config raises for bad overrides: Hydra's and OmegaConf's errors, and the
# ValueError/TypeError a few malformed overrides provoke inside Hydra (`model.files.x=1`).
def composition_errors() -> tuple[type[BaseException], ...]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return HydraException, OmegaConfBaseException, ValueError, TypeError


def check_run_args(args: Sequence[str]) -> None:
    """Compose the config of `harness run ARGS` as Hydra will (the primary config; a sweep's points
    are composed by the pre-flight) and raise a one-line ConfigError for what Hydra refuses, before
    Hydra prints its own several-line message. Arguments Hydra's parser does not take, and
    --config-dir/--config-path, are left to Hydra."""
    from hydra import initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    parser = get_args_parser()

    def refuse(message: str):  # argparse would print usage and exit: leave that to Hydra
        raise _NotOurs(message)

    parser.error = refuse  # type: ignore[method-assign]
    try:
        ns = parser.parse_args(list(args))
    except _NotOurs:
        return
    if ns.config_dir or ns.config_path or ns.shell_completion or getattr(ns, "experimental_rerun", None):
        return
    config_name = ns.config_name or "config"
    mode = RunMode.MULTIRUN if ns.multirun else RunMode.RUN
    register_resolvers()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        hydra = GlobalHydra.instance().hydra

        def recompose(overrides: list[str]):
            return hydra.compose_config(config_name, overrides, run_mode=mode, from_shell=True,
                                        with_log_configuration=False)

        try:
            recompose(list(ns.overrides))
        except composition_errors() as e:
            raise composition_error(e, list(ns.overrides), recompose) from None


class _NotOurs(Exception):
    pass


def composition_error(e: BaseException, overrides: Sequence[str], recompose=None) -> ConfigError:
    """One line for an exception Hydra raised composing `overrides`: the key or config group, and
    what it has instead (`runtime.no_such_key: is not a configuration key; keys of runtime: ...`,
    `model: no option llama99; available: ...`). `recompose(overrides)` composes a config (used to
    list the keys the config does have); call inside the Hydra context that raised, or none."""
    from hydra.errors import MissingConfigException, OverrideParseException

    msg = str(e).strip()
    if isinstance(e, MissingConfigException):
        group, _, option = (e.missing_cfg_file or "").rpartition("/")
        if not group:  # the primary config itself (--config-name)
            return CompositionError("config", option, f"cannot be applied: {_one_line(msg)}")
        if e.options:
            return CompositionError(group, option, f"no option {option}; available: {', '.join(e.options)}")
        groups = _groups()
        return CompositionError(group, option, "is not a config group"
                                + (f"; config groups: {', '.join(groups)}" if groups else ""))
    if isinstance(e, OverrideParseException):
        line = str(getattr(e, "override", "") or "")
        why = _one_line(getattr(e, "message", None) or msg).split("See https://", 1)[0].rstrip("; ")
        key = line.split("=", 1)[0].lstrip("+~") or "overrides"
        return CompositionError(key, line, f"cannot parse {line!r}: {why} "
                                "(override grammar: https://hydra.cc/docs/advanced/override_grammar/basic/)")
    m = re.match(r"Could not override '([^']+)'", msg)
    full_key = getattr(e.__cause__, "full_key", None)
    if m and "@" not in m.group(1):
        key = m.group(1)
        value = next((o.split("=", 1)[1] for o in overrides if "=" in o and o.split("=", 1)[0] == key), None)
        options = _group_options(key) if "." not in key and "/" not in key else None
        if options is not None:  # `sweep=quick`: a group the defaults list does not name
            return CompositionError(key, value, f"is a config group outside the defaults: add it with "
                                    f"+{key}={value if value else 'OPTION'}; options: {', '.join(options)}")
    if m and full_key and "@" not in m.group(1):
        parent = str(full_key).rpartition(".")[0]
        keys = _keys_of(recompose, [o for o in overrides if o.split("=", 1)[0] != key], parent)
        where = f"keys of {parent}" if parent else "top-level keys"
        return CompositionError(key, value, "is not a configuration key"
                                + (f"; {where}: {', '.join(keys)}" if keys else ""))
    # Anything else: Hydra's own words on one line, under the override they are about.
    from hydra.errors import HydraException

    if not isinstance(e, HydraException):
        msg = f"{type(e).__name__}: {msg}"
    named = [o for o in overrides if f"'{o}'" in msg or f"'{o.split('=', 1)[0].lstrip('+~')}'" in msg]
    bad = max(named, key=len) if named else _first_refused(overrides, recompose)
    key = bad.split("=", 1)[0].lstrip("+~") if bad else "overrides"
    return CompositionError(key or "overrides", bad, f"cannot be applied: {_one_line(msg)}")


def _first_refused(overrides: Sequence[str], recompose) -> str | None:
    """The first override that does not compose on its own (for errors that do not name it)."""
    for o in overrides if recompose is not None else ():
        try:
            recompose([o])
        except Exception:
            return o
    return None


def _one_line(text: str) -> str:
    """Hydra's several-line message on one line, without the search path it lists."""
    text = text.split("Config search path:", 1)[0]
    return "; ".join(" ".join(ln.split()) for ln in text.strip().splitlines() if ln.strip()).replace(".;", ";")


def _keys_of(recompose, overrides: list[str], parent: str) -> list[str]:
    """The keys at `parent` of the config composed from `overrides` (the bad one left out), else of
    the defaults; [] when neither composes or the parent is not a mapping."""
    if recompose is None:
        return []
    for attempt in (overrides, []):
        try:
            node = recompose(attempt)
        except Exception:
            continue
        for part in parent.split(".") if parent else []:
            try:
                node = node[part]
            except Exception:
                return []
        return [str(k) for k in node.keys()] if hasattr(node, "keys") else []
    return []


@contextmanager
def _config_loader():
    """Hydra's config loader over the harness's config tree: the running one, else a fresh one."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    gh = GlobalHydra.instance()
    if gh.is_initialized():
        yield gh.hydra.config_loader
        return
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        yield GlobalHydra.instance().hydra.config_loader


def _groups() -> list[str]:
    try:
        with _config_loader() as loader:
            return sorted(loader.list_groups(""))
    except Exception:
        return []


def _group_options(group: str) -> list[str] | None:
    """The options of config group `group`, None when there is no such group."""
    try:
        with _config_loader() as loader:
            if group not in loader.list_groups(""):
                return None
            return sorted(loader.get_group_options(group))
    except Exception:
        return None
