"""The Feast store of a run folder: access, packed online rows, publishing gated tables, training sets."""
