"""Trainers: Arrow -> KeyedJaggedTensor batches, models, DMP training, metrics, the model registry."""
