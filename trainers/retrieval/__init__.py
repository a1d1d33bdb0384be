"""Retrieval: the multi-interest retriever (single, ComiRec-SA, MIND), sampled softmax, metrics, training."""
