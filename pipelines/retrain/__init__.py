"""Continuous training: the models learn from the stream, and a promotion passes every gate first.

    recstream retrain --workdir runs/demo --once                     # one window (cron, Airflow, a CronJob)
    recstream retrain --workdir runs/demo --follow --kafka H:P       # until SIGTERM: checkpoint, exit 0
    recstream models list --workdir runs/demo                        # versions and the champion (MLflow)
    recstream models rollback --workdir runs/demo ranker --why "CTR fell"

    config.py    RetrainConfig: sources, windows, models, gates, registry
    source.py    Kafka topics (assign + seek to the checkpointed offsets) or the stream's folders
    window.py    reading one window: the examples (or behaviors) up to its close, the accepted records
    records.py   records -> tables; at-least-once repeats dropped
    models.py    one model line per window: evaluate the champion, train a candidate, gate it
    evaluate.py  scores and metrics as serving computes them (point-in-time histories)
    loop.py      the loop: data gate, models, registry, publication, checkpoint (docs/retrain.md)
    state.py     checkpoints, the log the windows add, quarantine, the per-window records
    publish.py   a promoted retriever's interest vectors into Feast (user_interests)
    serving.py   the champion for serving, promote and rollback as commands
"""
