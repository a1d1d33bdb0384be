"""Ranking: the sequence ranker family (mean, DIN, TIN) with lifelong search units, and its training."""
