"""The Beam backfill: raw event files -> validated, deduplicated offline tables (docs/backfill.md)."""
