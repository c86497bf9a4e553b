"""Reports: a document model built from the analysis, rendered to Markdown and self-contained HTML."""
