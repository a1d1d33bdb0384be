"""Submitting the stream job to a Flink cluster, and a standalone cluster from the PyFlink wheel."""
