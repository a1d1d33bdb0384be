# recstream's trainer image: Python 3.11 with the locked packages, torchrec and the project; its
# entry point is the `recstream` command (the retrain CronJob runs `recstream retrain --once`).
# Build from the repository root:
#
#   docker build -f infra/trainer.Dockerfile -t recstream-trainer:0.1.0 .
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
WORKDIR /opt/recstream
COPY requirements/lock.txt requirements/torch-cpu.txt requirements/torchrec.txt requirements/
# The CPU build of torch first, as setup does: the lock pins fbgemm-gpu-cpu, and PyPI's CUDA torch
# would need CUDA packages the lock does not pin. (GPU training images need a lock of their own.)
RUN pip install --require-hashes --no-deps --index-url https://download.pytorch.org/whl/cpu \
        -r requirements/torch-cpu.txt \
    && pip install --require-hashes -r requirements/lock.txt \
    && pip install --no-deps --require-hashes -r requirements/torchrec.txt
COPY pyproject.toml README.md ./
COPY features features
COPY pipelines pipelines
COPY trainers trainers
COPY feature_repo feature_repo
RUN pip install --no-deps . \
    && python -c "import torchrec, pipelines.retrain.loop" \
    && useradd --uid 10001 --no-create-home recstream \
    && mkdir -p /opt/recstream/conf /opt/recstream/runs \
    && chown -R 10001:10001 /opt/recstream/runs
USER 10001
ENTRYPOINT []
