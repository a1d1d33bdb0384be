"""`recstream train`: one ranker or retriever trained on a backfilled run folder (docs/training.md)."""
