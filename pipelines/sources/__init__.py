"""Event sources: dataset loaders and the synthetic generator, all yielding raw records."""
