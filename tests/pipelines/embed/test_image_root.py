"""An image_ref is read only under the image root: "../", an absolute path elsewhere and a link
that leads out are named image_outside_root and not opened."""
from __future__ import annotations

import os

from pipelines.embed.encoders import EncoderSpec
from pipelines.embed.job import PrepareFn


def test_image_refs_stay_under_the_root(tmp_path):
    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    (root / "a" / "ok.png").write_bytes(b"inside")
    (tmp_path / "secret.png").write_bytes(b"outside")
    os.symlink(tmp_path / "secret.png", root / "link.png")
    prepare = PrepareFn(EncoderSpec(), str(root)).prepare
    for ref in ("a/ok.png", str(root / "a" / "ok.png"), "a/../a/ok.png"):
        got = prepare(1, {"text": "t", "image_ref": ref})
        assert got.image_path == str(root / "a" / "ok.png") and got.issues == (), ref
    for ref in ("../secret.png", str(tmp_path / "secret.png"), "link.png", "/etc/passwd"):
        got = prepare(1, {"text": "t", "image_ref": ref})
        assert got.image_path is None and [r for r, _ in got.issues] == ["image_outside_root"], ref
        assert got.image_ref == ref  # named in the dead letter as the catalog gave it
