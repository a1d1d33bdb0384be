"""Engine adapters and jobs: Beam backfill, PyFlink stream, Feast, gates, the CLI."""
