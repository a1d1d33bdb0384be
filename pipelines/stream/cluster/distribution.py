"""The Flink distribution inside the apache-flink wheel: its home, version, Java, and conf dirs.

The wheel carries Flink's bin/, conf/, lib/ and opt/. A cluster or a client gets a private conf
dir (config.yaml, Flink 2.x, flattened, with its settings on top), so nothing is written into
site-packages.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
from pathlib import Path

import yaml

from features.errors import RecstreamError

CONF_FILES = ("log4j-console.properties", "log4j-cli.properties", "log4j.properties", "logback-console.xml",
              "logback.xml")


class FlinkClusterError(RecstreamError, RuntimeError):
    """The cluster could not start or stop (Java missing, a port busy, a JVM exited); carries the log tail."""


class FlinkJobError(RecstreamError, RuntimeError):
    """Submitting a job failed, or the job failed or timed out; carries Flink's own error text."""


def flink_home() -> Path:
    """The Flink distribution inside the apache-flink wheel (the pyflink package folder)."""
    spec = importlib.util.find_spec("pyflink")
    home = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if home is None or not (home / "bin" / "flink").is_file():
        raise FlinkClusterError("no Flink distribution found: the apache-flink wheel (pyflink/bin/flink) is "
                                "missing; run `make setup`")
    return home


def flink_version() -> str:
    """The pinned Flink version, e.g. '2.3.0' (the apache-flink wheel's)."""
    return importlib.metadata.version("apache-flink")


def java_home() -> Path:
    """$JAVA_HOME if it holds bin/java, else the JDK behind `java` on PATH."""
    env = os.environ.get("JAVA_HOME")
    if env and (Path(env) / "bin" / "java").is_file():
        return Path(env)
    java = shutil.which("java")
    if java is None:
        raise FlinkClusterError("Java not found: no $JAVA_HOME/bin/java and no `java` on PATH; install a JDK 17 "
                                "(apt-get install openjdk-17-jre-headless) or set JAVA_HOME")
    return Path(java).resolve().parents[1]


def write_conf(conf_dir: Path, settings: dict) -> Path:
    """The wheel's conf/ (logging files, flattened config.yaml) with settings on top, into conf_dir."""
    src = flink_home() / "conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    for name in CONF_FILES:
        shutil.copy(src / name, conf_dir / name)
    conf = _flatten(yaml.safe_load((src / "config.yaml").read_text()) or {})
    conf.update(settings)
    (conf_dir / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=True))
    return conf_dir


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
