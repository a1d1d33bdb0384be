"""The Feast repository: `feast apply` works from this folder; pipelines build the same objects."""
