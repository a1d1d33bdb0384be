"""`recstream report`: one self-contained HTML page of a run folder, with PNG plots (matplotlib)."""
