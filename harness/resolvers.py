"""OmegaConf resolvers the config tree uses. Registered before Hydra composes anything."""

from __future__ import annotations


def register() -> None:
    from omegaconf import OmegaConf

    from .store import job_dirname

    if not OmegaConf.has_resolver("harness_jobdir"):
        OmegaConf.register_new_resolver("harness_jobdir", job_dirname)
