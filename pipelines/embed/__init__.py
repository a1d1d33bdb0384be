"""The item embedding job: catalog -> encoders (text, image) -> versioned item vectors (docs/embeddings.md)."""
