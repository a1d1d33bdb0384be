"""The PyFlink stream job: events (Kafka or files) -> keyed state -> online features, examples, dead letters.

    config.py    StreamConfig and KafkaSettings (typed, validated at load)
    graph.py     the job graph: sources, validation, keyed functions, sinks
    keyed.py     the keyed functions (UserFeaturesFn, ItemStatsFn) over features/ algebras
    runtime.py   what the functions share: parsing, ledger, counts, state cache, online writer
    examples.py  the impression/click join of the training-example stream
    io.py        Kafka and file sources and sinks, watermarks
    receipts.py  count receipts from the functions to the driver
    driver.py    run the job on a mini-cluster (run_stream) or here (run_here)
    __main__.py  `python -m pipelines.stream --config stream.toml` (what `flink run -pym` runs)
    cluster/     submission to a Flink cluster; a standalone cluster from the wheel
"""
