"""What `feast apply` registers when run from this folder: the demo's run folder
(runs/demo, or $RECSTREAM_WORKDIR), with the objects of definitions.py. Feast
collects the module's attributes, so every object is bound here by its name."""
import os
from pathlib import Path

from feature_repo.definitions import definitions

DEMO_WORKDIR = Path(os.environ.get("RECSTREAM_WORKDIR", Path(__file__).resolve().parent.parent / "runs" / "demo"))
(DEMO_WORKDIR / "feast").mkdir(parents=True, exist_ok=True)  # `feast apply` does not create it
globals().update(definitions(str(DEMO_WORKDIR / "offline")))
