"""Analysis of result folders: ingest (ours and foreign formats) -> tidy sample table ->
statistics, effects, best/Pareto, comparisons. Returns data; only the CLI and renderers print."""
