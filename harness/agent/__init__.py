"""The report's narrative written by a local model from the computed facts, and its fact check.

`narrative.run_agent(analysis, overrides, out_dir)` is the entry point; `factcheck` is pure.
"""
