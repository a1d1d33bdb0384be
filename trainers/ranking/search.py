"""Lifelong two-stage search: a general search unit (GSU) picks the top-k behaviors of a long
history for each target; the model's pooling (the exact search unit) then runs over those k only.

One interface for every unit: score each behavior of the jagged history (a float per behavior,
-inf where it may not be picked), then ``top_k_positions`` keeps the k best per row and
``keep_behaviors`` cuts the KJT's ``hist_*`` features down to them, so the representation
tables are looked up for k behaviors per row, never for the whole history.

- ``category``: SIM hard search (Pi et al. 2020, "Search-based User Interest Modeling with
  Lifelong Sequential Behavior Data for Click-Through Rate Prediction", CIKM, Sec. 4.1:
  r_i = Sign(C_i = C_a)): behaviors whose category equals the target's, most recent first.
- ``cosine``: MUSE GSU (Wu et al. 2024, "MUSE: A Multi-modal Target Attention Model for CTR
  Prediction"): cosine of the behaviors' frozen multimodal item vectors with the target's.
- ``dare``: DARE (Feng et al. 2024, "Long-Sequence Recommendation Models Need Decoupled
  Embeddings", ICLR 2025, Sec. 4): the scaled inner product of the behavior's and the target's
  ATTENTION embeddings (a separate, smaller table; here with their time-gap encodings added),
  the same score the exact search unit uses as its attention logit.

Ties rank the more recent behavior first. Every scorer works on the jagged values ([N] or
[N, d], N = behaviors in the batch); only [B, L] scalars are ever padded.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

SEARCHES = ("none", "category", "cosine", "dare")
COSINE_CHUNK = 32_768  # behaviors per chunk when gathering item vectors (bounds memory at 10^4-long histories)
TABLE_SCORES_MAX = 1 << 24  # score the whole vector table at once up to this many (row, target) pairs


def row_ids(lengths: torch.Tensor) -> torch.Tensor:
    """lengths [B] -> the row of each jagged value [N]."""
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths)


def positions(lengths: torch.Tensor) -> torch.Tensor:
    """lengths [B] -> each value's position in its row [N] (0 = oldest behavior)."""
    offsets = torch.cumsum(lengths, 0) - lengths
    return torch.arange(int(lengths.sum()), device=lengths.device) - torch.repeat_interleave(offsets, lengths)


def padded_scores(scores: torch.Tensor, lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Jagged scores [N] -> [B, max_len], -inf at padding. Rows longer than max_len are an error."""
    if lengths.numel() and int(lengths.max()) > max_len:
        raise ValueError(f"a history of {int(lengths.max())} behaviors exceeds the model's max_len={max_len}; "
                         "build batches with the same max_len as the model")
    out = torch.full((lengths.numel(), max_len), float("-inf"), dtype=torch.float32, device=scores.device)
    out[row_ids(lengths), positions(lengths)] = scores.float()
    return out


def top_k_positions(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scores [B, L] (-inf or NaN: not eligible) -> (indices [B, k'], picked [B, k'] bool), k' = min(k, L).

    Per row, the k highest scores; among equal scores the later position (the more recent
    behavior) wins. The picked positions come first, in time order (ascending); where fewer
    than k' are eligible, the remaining slots are unpicked (``picked`` False, index arbitrary)."""
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, L], got shape {tuple(scores.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    B, L = scores.shape
    k = min(k, L)
    scores = scores.float().masked_fill(torch.isnan(scores), float("-inf"))
    eligible = scores > float("-inf")
    threshold = torch.topk(scores, k, dim=1).values[:, -1:]  # the k-th best score of each row
    above = eligible & (scores > threshold)
    tied = eligible & (scores == threshold)
    need = k - above.sum(dim=1, keepdim=True)  # tie slots left to fill
    from_end = tied.flip(1).cumsum(1).flip(1)  # 1 = the most recent tied behavior, 2 = the next, ...
    chosen = above | (tied & (from_end <= need))
    pos = torch.arange(L, device=scores.device).expand(B, L)
    key = torch.where(chosen, pos, pos + L)  # chosen first, each group in time order
    ordered = torch.topk(key, k, dim=1, largest=False).values
    picked = ordered < L
    return torch.where(picked, ordered, ordered - L), picked


def kept_values(lengths: torch.Tensor, indices: torch.Tensor,
                picked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices from ``top_k_positions`` -> (the picked behaviors' indices into the jagged values [M],
    the new lengths [B]). Row-major over the picked slots, so the kept values stay jagged and in time order."""
    offsets = torch.cumsum(lengths, 0) - lengths
    flat = (offsets.unsqueeze(1) + indices)[picked]
    return flat, picked.sum(dim=1)


def keep_behaviors(sparse: KeyedJaggedTensor, take: torch.Tensor, lengths: torch.Tensor) -> KeyedJaggedTensor:
    """A KJT with the same keys where every ``hist_*`` feature keeps only the values at ``take``
    (with ``lengths`` per row) and every other feature is unchanged."""
    features = sparse.to_dict()
    values, all_lengths = [], []
    for key in sparse.keys():
        jt = features[key]
        if key.startswith("hist_"):
            values.append(jt.values().index_select(0, take))
            all_lengths.append(lengths.to(jt.lengths().dtype))
        else:
            values.append(jt.values())
            all_lengths.append(jt.lengths())
    return KeyedJaggedTensor.from_lengths_sync(keys=sparse.keys(), values=torch.cat(values),
                                               lengths=torch.cat(all_lengths))


def category_scores(sparse: KeyedJaggedTensor) -> torch.Tensor:
    """SIM hard search: a behavior's position (recency) where its category equals the target's, else -inf."""
    features = sparse.to_dict()
    hist, target = features["hist_category"], features["target_category"]
    lengths = hist.lengths()
    same = hist.values() == target.values()[row_ids(lengths)]
    pos = positions(lengths).float()
    return torch.where(same, pos, torch.full_like(pos, float("-inf")))


def cosine_scores(vectors: torch.Tensor, target_rows: torch.Tensor, hist_rows: torch.Tensor, lengths: torch.Tensor,
                  chunk: int = COSINE_CHUNK, table_max: int = TABLE_SCORES_MAX) -> torch.Tensor:
    """MUSE GSU: cosine of each behavior's frozen vector (rows of ``vectors``) with its target's, [N].

    When the table is small (rows x targets <= ``table_max``, and less than the behaviors' own
    vectors) every table row is scored against the batch's targets once and each behavior picks
    its score; otherwise the behaviors' vectors are gathered ``chunk`` at a time, so a long
    history never holds [N, dim] at once. Zero vectors (unknown items) score 0."""
    with torch.no_grad():
        target = F.normalize(vectors[target_rows].float(), dim=-1)
        rows = row_ids(lengths)
        if vectors.shape[0] * target.shape[0] <= min(table_max, hist_rows.numel() * vectors.shape[1]):
            inverse_norm = 1.0 / vectors.float().norm(dim=-1).clamp_min(1e-12)
            return ((vectors.float() @ target.T) * inverse_norm[:, None])[hist_rows, rows]
        out = torch.empty(hist_rows.numel(), dtype=torch.float32, device=vectors.device)
        for start in range(0, hist_rows.numel(), chunk):
            h = vectors[hist_rows[start:start + chunk]].float()
            dots = torch.einsum("nd,nd->n", h, target[rows[start:start + chunk]])
            out[start:start + chunk] = dots / h.norm(dim=-1).clamp_min(1e-12)
    return out


def dare_scores(att: dict[str, JaggedTensor]) -> torch.Tensor:
    """DARE search over attention-table lookups (feature name -> JaggedTensor): per behavior,
    k_i . q / sqrt(a) with k_i = [item_att ; category_att] + gap_att of the behavior and q the
    same for its target, [N], without gradient (the selection is not differentiable)."""
    with torch.no_grad():
        keys = torch.cat([att["hist_item"].values(), att["hist_category"].values()], dim=-1) + att["hist_gap"].values()
        query = torch.cat([att["target_item"].values(), att["target_category"].values()], dim=-1) \
            + att["target_gap"].values()
        rows = row_ids(att["hist_item"].lengths())
        return (keys * query[rows]).sum(-1) / math.sqrt(keys.shape[-1])
