"""`recstream train`: one ranker or retriever trained on a backfilled run folder (docs/training.md)."""

# The models by name (here, not in job.py, so that the CLI lists them without importing torch).
RANKERS = ("mean", "din", "tin", "dien", "sdim")
RETRIEVERS = ("single", "comirec-sa", "mind")
