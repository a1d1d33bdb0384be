"""SDIM: target attention approximated by hash-based sampling of the behaviors (no attention weights)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainers.ranking.pooling import Behaviors, Pooling

CHUNK = 1_024  # behaviors hashed per product


class SdimPooling(Pooling):
    """SDIM (Cao et al. 2022, "Sampling Is All You Need on Modeling Long-term User Behaviors for CTR
    Prediction", CIKM; the hash-based sampling of the user behaviors), with no parameters:

    - m hash functions of tau bits each (multi-round SimHash, sign random projections): hash j
      of a vector x is the tau-bit signature h_j(x) = [R_j1 . x > 0, ..., R_jtau . x > 0], the
      R_jk fixed Gaussian vectors (``projections`` [d_key, m, tau]: drawn once from a generator
      seeded with ``seed``, not trained, a buffer saved in the state_dict, so serving hashes as
      training did);
    - for each hash j, the real behaviors whose signature equals the target's are gathered, their
      embeddings summed and L2-normalized: s_j = sum_{i: h_j(k_i) = h_j(q)} v_i, u_j = s_j / ||s_j||;
    - the user interest is the mean over the hash functions: u = (1/m) sum_j u_j.

    A behavior collides with the target in one hash with probability (1 - theta/pi)^tau, theta their
    angle, so u approximates target attention with those weights, without scoring every behavior
    against the target in a learned attention. A behavior equal to the target collides in every
    hash, its negation in none; padding never collides; a hash with no collision adds the zero vector
    (an empty history pools to zeros). Signatures come from the ``key`` view (DARE's attention
    embeddings, when decoupled) and the summed vectors from the ``value`` view. Hashing has no
    gradient: the embeddings learn through the gathered sums. The defaults m = 48, tau = 3 are what
    summaries of the paper's study of m and tau report as its best setting (AUC flat beyond m of
    about 48, tau of about 3 best); they were not checked against the paper's own tables."""

    def __init__(self, key_dim: int, hashes: int = 48, bits: int = 3, seed: int = 0):
        super().__init__()
        if hashes < 1 or not 1 <= bits <= 32:
            raise ValueError(f"SDIM needs hashes >= 1 and 1 <= bits <= 32, got hashes={hashes}, bits={bits}")
        generator = torch.Generator().manual_seed(seed)  # its own stream: the global RNG is left alone
        self.register_buffer("projections", torch.randn(key_dim, hashes, bits, generator=generator))

    def collisions(self, target: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        """[B, L, m]: 1.0 where behavior l's signature under hash j equals the target's. No gradient
        (hashing has none), and computed ``CHUNK`` behaviors at a time, so a long history never
        holds its [B, L, m, tau] projections at once. The target is hashed in the same product as
        each chunk: a behavior equal to the target gets bit for bit the same projections."""
        m, tau = self.projections.shape[1:]
        proj = self.projections.flatten(1).to(hist.dtype)  # [d_key, m * tau]
        out = []
        with torch.no_grad():
            for chunk in hist.split(CHUNK, dim=1):
                bits = (torch.cat([target.unsqueeze(1), chunk], dim=1) @ proj > 0).unflatten(-1, (m, tau))
                out.append((bits[:, 1:] == bits[:, :1]).all(dim=-1))
        return torch.cat(out, dim=1).to(hist.dtype) if out else hist.new_zeros(hist.shape[0], 0, m)

    def forward(self, value: Behaviors, key: Behaviors, mask: torch.Tensor) -> torch.Tensor:
        collide = self.collisions(key.target, key.hist) * mask.unsqueeze(-1)  # [B, L, m]
        sums = torch.einsum("blm,bld->bmd", collide, value.hist)  # s_j
        return F.normalize(sums, dim=-1).mean(dim=1)  # (1/m) sum_j s_j / ||s_j|| (0 where s_j = 0)
