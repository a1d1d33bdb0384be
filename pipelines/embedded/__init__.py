"""Servers this machine runs itself for the demo, tests and benchmarks: the embedded Kafka-protocol
broker (Tansu), redis-server, and a small Kafka client to create topics, produce and read them back.
Nothing in a production job path imports this package."""
