"""A seeded, streaming synthetic event generator with planted structure.

Every user holds a few latent interests (categories) that drift over time.
Items have a category and a Zipf popularity within it. In each session a user
is shown a slate (impressions, half from their interests, half popular items);
the click probability rises with the match to the user's current interests and
with recency (the category the user clicked last, within the last day). Events
are produced one time window at a time, so 10**8 events never sit in memory.
The ground truth (each user's interests from a time on) comes with each window.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
from pipelines.config import typed

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@typed
@dataclass(frozen=True)
class SyntheticConfig:
    users: int = 500
    items: int = 4_000
    categories: int = 40
    interests_per_user: int = 3
    sessions_per_user: float = 24.0
    slate_size: int = 8
    days: int = 30
    start_ms: int = 1_704_067_200_000  # 2024-01-01T00:00:00Z
    drift_per_day: float = 0.05
    zipf_exponent: float = 1.1
    bad_fraction: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("users", "items", "categories", "interests_per_user", "slate_size", "days"):
            if getattr(self, name) < 1:
                raise ValueError(f"SyntheticConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.interests_per_user > self.categories:
            raise ValueError("SyntheticConfig.interests_per_user cannot exceed categories")
        if not 0.0 <= self.bad_fraction < 1.0:
            raise ValueError(f"SyntheticConfig.bad_fraction must be in [0, 1), got {self.bad_fraction}")


def click_probability(match: np.ndarray, recent: np.ndarray) -> np.ndarray:
    """The planted click model: logistic in interest match and recency."""
    return 1.0 / (1.0 + np.exp(-(-3.0 + 2.2 * match + 1.8 * recent)))


class SyntheticStream:
    """Iterate ``windows()`` for (json_lines, truth_rows) one hour at a time."""

    def __init__(self, config: SyntheticConfig):
        self.config = config
        rng = np.random.default_rng(config.seed)
        self.item_category = rng.integers(config.categories, size=config.items)
        self.item_weight = np.empty(config.items)
        self.items_by_category = []
        for c in range(config.categories):
            members = np.flatnonzero(self.item_category == c)
            rng.shuffle(members)
            w = 1.0 / np.arange(1, len(members) + 1) ** config.zipf_exponent
            self.item_weight[members] = w
            self.items_by_category.append((members, np.cumsum(w) / max(w.sum(), 1e-12)))
        self.global_cdf = np.cumsum(self.item_weight) / self.item_weight.sum()
        self.interests = np.stack(
            [rng.choice(config.categories, config.interests_per_user, replace=False) for _ in range(config.users)]
        )
        self._rng = rng

    def catalog(self) -> pa.Table:
        """Raw item catalog: item_id, category_id, text."""
        words = ["red", "swift", "quiet", "bright", "deep", "bold", "soft", "wild"]
        items = np.arange(self.config.items)
        text = [f"{words[c % len(words)]} item {i} of category {c}" for i, c in zip(items, self.item_category)]
        return pa.table({"item_id": items, "category_id": self.item_category.astype(np.int64), "text": text})

    def windows(self) -> Iterator[tuple[list[str], list[dict]]]:
        cfg, rng = self.config, self._rng
        last_click_cat = np.full(cfg.users, -1)
        last_click_ms = np.full(cfg.users, -(10**15), dtype=np.int64)
        rate = cfg.sessions_per_user / (cfg.days * 24)
        next_event, next_session = 0, 0
        truth = [self._truth_row(u, cfg.start_ms) for u in range(cfg.users)]
        for hour in range(cfg.days * 24):
            t0 = cfg.start_ms + hour * HOUR_MS
            if hour and hour % 24 == 0:
                truth += self._drift(t0)
            n_sessions = rng.poisson(rate, size=cfg.users)
            users = np.repeat(np.arange(cfg.users), n_sessions)
            times = np.sort(t0 + rng.integers(HOUR_MS, size=len(users)))
            users = rng.permutation(users)
            rows = self._sessions(users, times, last_click_cat, last_click_ms, next_session)
            next_session += len(users)
            lines = []
            for row in rows:
                row["event_id"] = f"e{next_event}"
                next_event += 1
                lines.append(self._maybe_corrupt(row))
            yield lines, truth
            truth = []

    def _sessions(self, users, times, last_cat, last_ms, first_session) -> list[dict]:
        cfg, rng = self.config, self._rng
        rows: list[dict] = []
        s = cfg.slate_size
        for k, (u, t) in enumerate(zip(users, times)):
            from_interest = rng.random(s) < 0.5
            cats = self.interests[u, rng.integers(cfg.interests_per_user, size=s)]
            slate = np.where(from_interest, self._pick_in(cats, rng), np.searchsorted(self.global_cdf, rng.random(s)))
            slate = np.minimum(slate, cfg.items - 1)
            slate_cats = self.item_category[slate]
            match = np.isin(slate_cats, self.interests[u]).astype(float)
            recent = ((slate_cats == last_cat[u]) & (t - last_ms[u] < DAY_MS)).astype(float)
            clicked = rng.random(s) < click_probability(match, recent)
            request = f"r{first_session + k}"
            for pos in range(s):
                item, cat = int(slate[pos]), int(slate_cats[pos])
                rows.append(self._row(u, item, cat, "impression", int(t), request, pos))
            for pos in np.flatnonzero(clicked):
                item, cat = int(slate[pos]), int(slate_cats[pos])
                click_ms = int(t) + 1000 * int(1 + rng.integers(120))
                rows.append(self._row(u, item, cat, "click", click_ms, request, int(pos)))
                if rng.random() < 0.1:
                    rows.append(self._row(u, item, cat, "buy", click_ms + 60_000, request, int(pos)))
                last_cat[u], last_ms[u] = cat, click_ms
        return rows

    def _pick_in(self, cats: np.ndarray, rng) -> np.ndarray:
        out = np.empty(len(cats), dtype=np.int64)
        for i, c in enumerate(cats):
            members, cdf = self.items_by_category[c]
            out[i] = members[min(np.searchsorted(cdf, rng.random()), len(members) - 1)] if len(members) else 0
        return out

    @staticmethod
    def _row(user, item, cat, kind, ts, request, pos) -> dict:
        return {"user_id": int(user), "item_id": int(item), "category_id": int(cat), "event_type": kind,
                "timestamp": ts, "request_id": request, "position": pos}

    def _drift(self, t0: int) -> list[dict]:
        cfg, rng = self.config, self._rng
        rows = []
        for u in np.flatnonzero(rng.random(cfg.users) < cfg.drift_per_day):
            free = np.setdiff1d(np.arange(cfg.categories), self.interests[u])
            if len(free):
                self.interests[u, rng.integers(cfg.interests_per_user)] = rng.choice(free)
                rows.append(self._truth_row(u, t0))
        return rows

    def _truth_row(self, user: int, from_ms: int) -> dict:
        return {"user_id": int(user), "from_ms": int(from_ms), "interests": sorted(int(c) for c in self.interests[user])}

    def _maybe_corrupt(self, row: dict) -> str:
        cfg = self.config
        if cfg.bad_fraction == 0.0 or self._rng.random() >= cfg.bad_fraction:
            return json.dumps(row)
        kind = int(self._rng.integers(5))
        if kind == 0:
            return json.dumps(row)[:-7]  # truncated line
        bad = dict(row)
        if kind == 1:
            del bad["user_id"]
        elif kind == 2:
            bad["event_type"] = "teleport"
        elif kind == 3:
            bad["timestamp"] = row["timestamp"] // 1000  # seconds, not milliseconds
        else:
            bad["item_id"] = ["not", "an", "id"]
        return json.dumps(bad)
