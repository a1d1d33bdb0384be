"""What `feast apply` registers when run from this folder: the demo's run folder
(runs/demo, or $RECSTREAM_WORKDIR), with the objects of definitions.py."""
import os
from pathlib import Path

from feature_repo.definitions import ITEM_CONTENT, USER_SEQUENCE, USER_SEQUENCE_PUSH, definitions

DEMO_WORKDIR = Path(os.environ.get("RECSTREAM_WORKDIR", Path(__file__).resolve().parent.parent / "runs" / "demo"))
(DEMO_WORKDIR / "feast").mkdir(parents=True, exist_ok=True)  # `feast apply` does not create it
_objects = definitions(str(DEMO_WORKDIR / "offline"))
user = _objects["user"]
user_sequence_offline = _objects["user_sequence_offline"]
user_sequence_push = _objects[USER_SEQUENCE_PUSH]
user_sequence = _objects[USER_SEQUENCE]
ranker = _objects["ranker"]
if ITEM_CONTENT in _objects:  # the run folder has item vectors (`recstream embed`)
    item = _objects["item"]
    item_embedding_offline = _objects["item_embedding_offline"]
    item_content = _objects[ITEM_CONTENT]
    ranker_item_content = _objects["ranker_item_content"]
