"""Experiments: workflows measured as a whole rather than one configuration point at a time.

`harness experiment NAME [overrides]` composes conf/experiment/NAME.yaml (as `+experiment=NAME`)
with the usual config tree, validates everything before a model loads, runs, and writes one
folder `<results_dir>/<NAME>-<timestamp>/` with experiment.json (raw measurements), a CSV table
and report.md + report.html.

  agent_ab           the agent workflow under two configurations A and B, compared B/A with the
                     semantics of `harness compare` (ratio, Fieller CI, Welch p, significance)
  concurrent_agents  K agents generating at once in one process: per-agent and aggregate rates,
                     speedup over K=1 and efficiency
"""

NAMES = ("agent_ab", "concurrent_agents")
SCHEMA_VERSION = 1
