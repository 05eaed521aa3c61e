"""The transformer that PET runs over the tokens of one atom's environment.

A post-layer-norm encoder layer whose attention is modulated by the smooth cutoff (DESIGN.md
section 3): after the softmax each weight is multiplied by f of its key token and the weights
are renormalised over keys, so that a key with f = 0 drops out exactly. Multiplying by f and
renormalising equals a softmax over ``logits + log f``, which is what runs here: two passes over
the (sequences, heads, tokens, tokens) weights instead of five (10-20 % less time for a raw
evaluation on a CPU: ``scripts/bench_model.py --part layout``, docs/performance.md). log f is -inf for f = 0 (padding and keys at the cutoff drop out exactly); f is
clamped to the smallest normal float before the log, so that the energy and its first and
second derivatives stay finite (double backward is needed to train on forces). The clamp only
touches keys with f < 1.2e-38 (float32) or 2.2e-308 (float64), negligible either way.
"""

import torch
from torch import nn


class CutoffAttention(nn.Module):
    """Multi-head self-attention with cutoff-weighted keys.

    Input ``tokens`` (T, L, d) for T sequences of L tokens; ``key_weights`` (T, L) in [0, 1]
    (0 for padding). Output (T, L, d).
    """

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_pet = {d_model} is not divisible by the number of heads {n_heads}")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, tokens: torch.Tensor, key_weights: torch.Tensor) -> torch.Tensor:
        n_seq, n_tok, d_model = tokens.shape
        qkv = self.qkv(tokens).view(n_seq, n_tok, 3, self.n_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (T, heads, L, head_dim)
        logits = (q @ k.transpose(-1, -2)) * self.head_dim**-0.5
        tiny = torch.finfo(key_weights.dtype).tiny
        log_weights = torch.where(key_weights > 0, key_weights.clamp_min(tiny).log(), float("-inf"))
        attention = torch.softmax(logits + log_weights[:, None, None, :], dim=-1)
        mixed = (attention @ v).transpose(1, 2).reshape(n_seq, n_tok, d_model)
        return self.out(mixed)


def definition_attention(module: CutoffAttention, tokens: torch.Tensor, key_weights: torch.Tensor) -> torch.Tensor:
    """What :meth:`CutoffAttention.forward` computes, done as DESIGN.md section 3 states it:
    softmax, multiply each weight by f of its key, renormalise (five passes over the weights).
    The reference of the tests and of ``scripts/bench_model.py --part layout``."""
    n_seq, n_tok, d_model = tokens.shape
    qkv = module.qkv(tokens).view(n_seq, n_tok, 3, module.n_heads, module.head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    logits = (q @ k.transpose(-1, -2)) * module.head_dim**-0.5
    weights = key_weights[:, None, None, :]
    logits = logits.masked_fill(weights == 0, float("-inf"))
    attention = torch.softmax(logits, dim=-1) * weights
    attention = attention / attention.sum(dim=-1, keepdim=True)
    return module.out((attention @ v).transpose(1, 2).reshape(n_seq, n_tok, d_model))


class EncoderLayer(nn.Module):
    """Post-LN transformer encoder layer: x = LN(x + attn(x)); x = LN(x + FF(x)), FF with SiLU."""

    def __init__(self, d_model: int, n_heads: int, d_feedforward: int):
        super().__init__()
        self.attention = CutoffAttention(d_model, n_heads)
        self.norm_attention = nn.LayerNorm(d_model)
        self.feedforward = nn.Sequential(
            nn.Linear(d_model, d_feedforward), nn.SiLU(), nn.Linear(d_feedforward, d_model)
        )
        self.norm_feedforward = nn.LayerNorm(d_model)

    def forward(self, tokens: torch.Tensor, key_weights: torch.Tensor) -> torch.Tensor:
        tokens = self.norm_attention(tokens + self.attention(tokens, key_weights))
        return self.norm_feedforward(tokens + self.feedforward(tokens))


class Transformer(nn.Module):
    """``n_layers`` encoder layers; shapes as :class:`CutoffAttention`."""

    def __init__(self, d_model: int, n_layers: int, n_heads: int, d_feedforward: int):
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, n_heads, d_feedforward) for _ in range(n_layers)
        )

    def forward(self, tokens: torch.Tensor, key_weights: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            tokens = layer(tokens, key_weights)
        return tokens
