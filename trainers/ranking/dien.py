"""DIEN: the interest extractor GRU, its auxiliary loss, and the AUGRU interest evolving layer.

Zhou et al. 2019, "Deep Interest Evolution Network for Click-Through Rate Prediction", AAAI.
The history is read in time order (position 0 the oldest behavior); a masked (padding) step
keeps the previous hidden state, so where the padding sits (left, right, or between behaviors)
does not change any state at a real step, nor the pooled vector (the auxiliary loss counts
adjacent real steps only).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainers.ranking.pooling import Behaviors, Pooling, masked_softmax


class InterestGRU(nn.Module):
    """A GRU in the DIEN paper's notation (its "Interest Extractor Layer" equations), i_t the
    input and h_{t-1} the state:

        u_t = sigma(W^u i_t + U^u h_{t-1} + b^u)                  update gate
        r_t = sigma(W^r i_t + U^r h_{t-1} + b^r)                  reset gate
        h~_t = tanh(W^h i_t + r_t (.) U^h h_{t-1} + b^h)
        h_t = (1 - u_t) (.) h_{t-1} + u_t (.) h~_t

    (nn.GRU has the same form, its update gate z_t playing 1 - u_t.) With ``attention`` a_t it is
    the AUGRU of the "Interest Evolving Layer": the update gate is scaled, u'_t = a_t * u_t, and
    h'_t = (1 - u'_t) (.) h'_{t-1} + u'_t (.) h~'_t. A step whose mask is 0 keeps the state,
    h_t = h_{t-1}. The state starts at zero."""

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.input = nn.Linear(input_dim, 3 * hidden_dim)  # [W^u; W^r; W^h] and [b^u; b^r; b^h]
        self.state = nn.Linear(hidden_dim, 3 * hidden_dim, bias=False)  # [U^u; U^r; U^h]

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor,
                attention: torch.Tensor | None = None) -> torch.Tensor:
        """inputs [B, L, d_in], mask [B, L] (1 real, 0 padding), attention [B, L] or None ->
        the states h_1..h_L [B, L, hidden] (at a masked step, the state carried over)."""
        B, L, _ = inputs.shape
        projected = self.input(inputs)  # W i_t + b for every step at once
        gate = mask if attention is None else mask * attention  # what scales u_t (0: keep h)
        h = inputs.new_zeros(B, self.hidden_dim)
        states = []
        for t in range(L):
            xu, xr, xh = projected[:, t].chunk(3, dim=-1)
            hu, hr, hh = self.state(h).chunk(3, dim=-1)
            u = torch.sigmoid(xu + hu)
            r = torch.sigmoid(xr + hr)
            candidate = torch.tanh(xh + r * hh)
            h = h + gate[:, t:t + 1] * u * (candidate - h)  # = (1 - u') h + u' h~, u' = gate * u
            states.append(h)
        return torch.stack(states, dim=1) if states else inputs.new_zeros(B, 0, self.hidden_dim)


def auxiliary_loss(states: torch.Tensor, behaviors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """DIEN's auxiliary loss (the "Interest Extractor Layer"): the interest state h_t should predict the next
    behavior e_{t+1} against a negative e^_{t+1}:

        L_aux = - mean over counted (i, t) of [ log sigma(h_t . e_{t+1}) + log(1 - sigma(h_t . e^_{t+1})) ]

    The negative of row i is the behavior of row i + 1 (mod B) at the same step t + 1, another
    user's behavior from the batch. A pair (i, t) is counted when steps t and t + 1 of row i and
    step t + 1 of the negative's row are real. The paper sums over t and averages over the N
    users; this averages over the counted pairs (the authors' code takes the mean over steps), so
    that alpha = 1 weighs one next-behavior prediction like one click. With fewer than two rows
    (no other user to draw a negative from) or no counted pair the loss is 0 (still in the graph)."""
    B, L, _ = states.shape
    if B < 2 or L < 2:
        return states.sum() * 0.0
    h, positive = states[:, :-1], behaviors[:, 1:]
    negative = behaviors.roll(shifts=-1, dims=0)[:, 1:]  # row i gets row i + 1's behavior
    counted = mask[:, :-1] * mask[:, 1:] * mask.roll(shifts=-1, dims=0)[:, 1:]
    pos_logit = (h * positive).sum(-1)
    neg_logit = (h * negative).sum(-1)
    per_pair = -(F.logsigmoid(pos_logit) + F.logsigmoid(-neg_logit))  # log(1 - sigma(x)) = log sigma(-x)
    return (per_pair * counted).sum() / counted.sum().clamp_min(1.0)


class DienPooling(Pooling):
    """DIEN (Zhou et al. 2019, "Deep Interest Evolution Network for Click-Through Rate Prediction",
    AAAI; the section "Deep Interest Evolution Network"):

    - interest extractor layer: a GRU (its four gate equations) over the behaviors e_1..e_T in
      time order gives the interest states h_t (``extractor``, hidden size = the behavior width,
      so h_t . e_{t+1} is defined);
    - auxiliary loss: h_t predicts the next behavior against a negative one (``auxiliary_loss``);
      the global loss is L = L_target + alpha * L_aux, alpha = ModelConfig.aux_loss_weight, added
      by the trainer through SequenceRanker.extra_loss(). ``aux_loss`` holds the L_aux of the
      last forward in training mode (None after an eval-mode forward);
    - interest evolving layer: attention a_t = exp(h_t W e_a) / sum_j exp(h_j W e_a) over the real
      steps, e_a the target, then the AUGRU (``evolver``: GRU with attentional update gate,
      u'_t = a_t * u_t) over h_1..h_T. Its state after the last real behavior, h'_T, is the
      pooled interest. An empty history pools to zeros.

    The GRUs read the ``value`` (representation) view; e_a in the attention is the ``key``
    view's target, the embedding the attention scores are computed from (the same object unless
    DARE decouples them). DIEN reads no time. (The paper's attention and MLPs use its own
    activation choices; the paper's final MLP reads h'_T beside the target, as the over-arch does.)"""

    def __init__(self, key_dim: int, value_dim: int):
        super().__init__()
        self.extractor = InterestGRU(value_dim, value_dim)
        self.attention = nn.Linear(key_dim, value_dim, bias=False)  # W e_a
        self.evolver = InterestGRU(value_dim, value_dim)
        self.aux_loss: torch.Tensor | None = None

    def forward(self, value: Behaviors, key: Behaviors, mask: torch.Tensor) -> torch.Tensor:
        states = self.extractor(value.hist, mask)  # h_1..h_T
        self.aux_loss = auxiliary_loss(states, value.hist, mask) if self.training else None
        logits = torch.einsum("blh,bh->bl", states, self.attention(key.target))  # h_t W e_a
        alpha = masked_softmax(logits, mask)
        evolved = self.evolver(states, mask, alpha)
        if evolved.shape[1] == 0:
            return value.hist.new_zeros(value.hist.shape[0], self.evolver.hidden_dim)
        return evolved[:, -1]  # masked steps carry the state: this is h' after the last real behavior
