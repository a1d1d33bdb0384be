"""The stream job's graph as Flink schedules it: each output sink is a task of its own (with the
JVM operator that splits its batches into lines), so the sinks' work never runs on the thread
of the Python functions (which hold the interpreter lock while it runs). Built in a child process: a PyFlink gateway per test process is enough."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[3]

VERTICES = """
import json, sys
from pathlib import Path
from pipelines.stream.config import StreamConfig
from pipelines.stream.driver import environment
from pipelines.stream.graph import build, make_output_dirs
work = Path(sys.argv[1])
cfg = StreamConfig(workdir=work, source=work / "in", accepted_log=True)
make_output_dirs(cfg)
env, _ = environment(cfg)
build(env, cfg)
graph = env._generate_stream_graph(False).getJobGraph()
print(json.dumps([vertex.getName() for vertex in graph.getVerticesAsArray()]))
"""


def test_every_output_sink_is_a_task_of_its_own(tmp_path):
    (tmp_path / "in").mkdir()
    done = subprocess.run([sys.executable, "-c", VERTICES, str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    names = json.loads(done.stdout.strip().splitlines()[-1])
    (user,) = [name for name in names if name.startswith("user features")]
    for sink, splits in (("dead letters", None), ("examples", "in time order"), ("accepted records", "Flat Map")):
        assert sink not in user, names
        task = f"{sink}: Writer" if splits is None else f"{splits} -> {sink}: Writer"  # with what splits its batches
        assert any(name.startswith(task) for name in names), names


def test_the_operators_modules_import_without_feast_or_torch():
    """In thread mode the operators unpickle their functions in the interpreter inside the
    TaskManager's JVM, where loading SciPy's native FFT module has hung the job's start:
    the functions' modules stay light, and only keyed.open_tables opens Feast, without them."""
    probe = ("import sys, pipelines.stream.keyed, pipelines.stream.runtime, pipelines.stream.examples\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'feast', 'torch', 'dask', 'pandas', 'scipy'}))")
    got = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "[]", got.stdout


def test_the_operators_open_the_store_without_torch_scipy_or_dask(tmp_path):
    """Loading SciPy's native FFT module (under Dask) inside the TaskManager's JVM has hung the
    job's start: the operators open Feast with torch and SciPy unavailable and without Dask (which loads
    SciPy), and their tables still read through Feast."""
    from pipelines.store.feature_store import apply, open_store

    apply(open_store(tmp_path), tmp_path)
    probe = ("import sys\nfrom pathlib import Path\n"
             "from pipelines.store.online_config import OnlineStore\n"
             "from pipelines.stream.keyed import open_tables\n"
             "tables = open_tables(Path(sys.argv[1]), OnlineStore(), ('user_stats', 'item_stats'))\n"
             "import feast\n"
             "loaded = [m for m in ('torch', 'scipy', 'dask') if sys.modules.get(m)]\n"
             "marked = [sys.modules.get(m, 'absent') for m in ('torch', 'scipy')]\n"
             "print(sorted(tables), loaded, marked, tables['item_stats'].read([1]))")
    got = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert got.returncode == 0, got.stderr[-2000:]
    # nothing native loaded, torch and SciPy marked missing, a row read through Feast
    assert got.stdout.split() == ["['item_stats',", "'user_stats']", "[]", "[None,", "None]", "[None]"]
