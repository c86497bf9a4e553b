"""The Hydra side of the harness: where the config tree lives, the resolvers it uses, and
composing a config outside the CLI (for tools and tests) exactly as `harness run` would."""

from __future__ import annotations

from typing import Sequence


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
