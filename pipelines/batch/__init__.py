"""The backfill: raw event files -> validated, deduplicated offline tables, on local threads or Beam (docs/backfill.md)."""
