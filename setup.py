"""The one packaging fact pyproject.toml cannot express: its automatic discovery
(`[tool.setuptools.packages.find]`) finds packages only where they lie on disk, and the Hydra
config tree lives at the top of the checkout (`conf/`) while it ships as `harness.conf`
(`package-dir` in pyproject.toml). So every package under harness/ is found here, a new one
included, and the config tree is added by name. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["harness", "harness.*"]), "harness.conf"])
