"""Setup verifies what it installs: every pin in every lock carries sha256 hashes, and every
install of a lock (setup, the Airflow environment, both images) runs with --require-hashes."""
from __future__ import annotations

import re

import pytest

from pipelines.stream.connector import REPO

LOCKS = ["lock.txt", "torch-cpu.txt", "torchrec.txt", "airflow-lock.txt", "pip.txt"]
INSTALLERS = ["scripts/setup.sh", "scripts/setup_airflow.sh", "infra/Dockerfile", "infra/trainer.Dockerfile"]


def _requirements(name: str) -> list[str]:
    text = (REPO / "requirements" / name).read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("name", LOCKS)
def test_every_pin_carries_sha256_hashes(name):
    reqs = _requirements(name)
    assert reqs, f"{name} pins nothing"
    for req in reqs:
        assert re.match(r"^[A-Za-z0-9._-]+==\S+ ", req), f"{name}: not an exact pin: {req[:80]}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]*)", req)
        assert hashes and all(len(h) == 64 for h in hashes), f"{name}: {req.split()[0]} has no sha256 hash"


@pytest.mark.parametrize("path", INSTALLERS)
def test_every_install_of_a_lock_requires_hashes(path):
    text = (REPO / path).read_text().replace("\\\n", " ")
    installs = [line for line in text.splitlines() if re.search(r"-r \S*requirements/", line)]
    assert installs, f"{path} installs no lock"
    for line in installs:
        for part in line.split("&&"):
            if "requirements/" in part:
                assert "--require-hashes" in part, f"{path}: installs without --require-hashes: {part.strip()}"


def test_files_are_matched_to_pins_whatever_the_separator():
    """PEP 503 names: typing-extensions is typing_extensions-*.whl and typing.extensions-*.tar.gz."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("lock_hashes", REPO / "scripts" / "lock_hashes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    of = module._of
    assert of("typing_extensions-4.12.2-py3-none-any.whl", "typing-extensions", "4.12.2")
    assert of("apache_flink-2.3.0.tar.gz", "apache-flink", "2.3.0")
    assert of("Apache.Flink-2.3.0-cp311-cp311-manylinux_2_28_x86_64.whl", "apache-flink", "2.3.0")
    assert not of("apache_flink_libraries-2.3.0.tar.gz", "apache-flink", "2.3.0")
    assert not of("apache_flink-2.3.1.tar.gz", "apache-flink", "2.3.0")


def test_pins_with_separators_carry_every_platforms_files():
    """apache-flink ships a wheel per platform and Python: a lock with one hash for it could only
    install on the machine that wrote it."""
    pins = {req.split("==")[0]: req for req in _requirements("lock.txt")}
    assert len(re.findall(r"--hash=", pins["apache-flink"])) > 3
