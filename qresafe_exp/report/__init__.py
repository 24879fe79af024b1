"""Reports: the paper's tables and figures regenerated from a study's metrics.json files."""
