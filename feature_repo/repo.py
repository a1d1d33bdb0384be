"""What `feast apply` registers when run from this folder: the objects of definitions.py
over the demo's run folder, ../runs/demo, the same folder feature_store.yaml names for the
registry and the online store (edit both to point the Feast CLI at another run). Feast
collects the module's attributes, so every object is bound here by its name."""
from pathlib import Path

from feature_repo.definitions import definitions

DEMO_WORKDIR = Path(__file__).resolve().parent.parent / "runs" / "demo"
(DEMO_WORKDIR / "feast").mkdir(parents=True, exist_ok=True)  # `feast apply` does not create it
globals().update(definitions(str(DEMO_WORKDIR / "offline")))
