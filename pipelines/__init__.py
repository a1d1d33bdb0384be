"""Engine adapters and jobs: the backfill (local or Beam), PyFlink stream, Feast, gates, the CLI."""
