"""A tiny decoder-only transformer whose weight matrices are named per block and projection.

Tokens (B, T) -> logits (B, T, V): learned token and position embeddings, ``n_layers`` blocks of
causal multi-head self-attention and a ReLU MLP, and an untied unembedding ``unembed`` (untied so
that the input and output embeddings are separate matrices with separate gradients). Every
projection is its own bias-free ``nn.Linear``, so each weight matrix has a name of its own::

    blocks.{i}.attn.q.weight  blocks.{i}.attn.k.weight  blocks.{i}.attn.v.weight
    blocks.{i}.attn.o.weight  blocks.{i}.mlp.up.weight  blocks.{i}.mlp.down.weight

LayerNorm placement (``TransformerConfig.norm``), with sublayer f in {attention, MLP}:

- ``pre``: x + f(LN(x)), and a final LN before the unembedding (GPT-2);
- ``post``: LN(x + f(x)), no final LN (Vaswani et al. 2017);
- ``peri``: x + LN(f(LN(x))), and a final LN (Peri-LN: Kim et al., "Peri-LN: Revisiting Layer
  Normalization in the Transformer Architecture", 2025; the embedding itself is not normalised).

``qk_norm`` applies a LayerNorm over each head's query and key vectors before the dot product
(qk-layernorm: Dehghani et al. 2023; Wortsman et al. 2023).

Attention is written out (matmul, causal mask, softmax) rather than calling
``scaled_dot_product_attention``, so that ``torch.func`` transforms and float64 work everywhere.
Weights are initialised N(0, 0.02²), with the residual-branch outputs ``o`` and ``down`` scaled by
1/√(2 n_layers) (GPT-2), from a seed and without disturbing the global RNG.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..training.rng import GLOBAL_RNG_LOCK
from .config import TransformerConfig

PROJECTIONS = ("q", "k", "v", "o", "up", "down")
_PATHS = {"q": "attn.q", "k": "attn.k", "v": "attn.v", "o": "attn.o", "up": "mlp.up", "down": "mlp.down"}


class Attention(nn.Module):
    """Causal multi-head self-attention with separate q, k, v, o projections.

    ``observer``, None by default (then it costs one attribute test per forward), is a capture
    point for analysis: when set, ``observer(module, scores, probs)`` is called in every forward
    with the scaled logits q·k/√d_head (B, H, T, T) (masked entries −inf) and the attention
    probabilities (B, H, T, T), the very tensors of the forward pass (autograd-tracked: an
    observer must only read them; :mod:`analysis_lib.activations.capture` sets one).
    """

    def __init__(self, config: TransformerConfig, max_len: int):
        super().__init__()
        d, self.n_heads = config.d_model, config.n_heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        head = d // config.n_heads
        self.q_norm = nn.LayerNorm(head) if config.qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head) if config.qk_norm else nn.Identity()
        causal = torch.ones(max_len, max_len, dtype=torch.bool).tril()
        self.register_buffer("causal", causal, persistent=False)  # (max_len, max_len)
        self.observer = None  # optional callable(module, scores, probs); see the class docstring

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        """Causal self-attention of ``x`` (B, T, d)."""
        b, t, d = x.shape

        def heads(z: torch.Tensor) -> torch.Tensor:
            return z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)  # (B, H, T, d_h)

        q, k, v = self.q_norm(heads(self.q(x))), self.k_norm(heads(self.k(x))), heads(self.v(x))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.n_heads)  # (B, H, T, T)
        scores = scores.masked_fill(~self.causal[:t, :t], float("-inf"))
        probs = scores.softmax(dim=-1)
        if self.observer is not None:
            self.observer(self, scores, probs)
        mixed = probs @ v  # (B, H, T, d_h)
        return self.o(mixed.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    """up (d -> d_mlp), ReLU, down (d_mlp -> d).

    ReLU rather than GELU: on one CPU thread GELU's forward and backward cost several times ReLU's,
    a large share of a training step of the default model (``benchmarks/README.md``).
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.up = nn.Linear(config.d_model, config.d_mlp, bias=False)
        self.down = nn.Linear(config.d_mlp, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        """down(relu(up(x)))."""
        return self.down(F.relu(self.up(x)))


class Block(nn.Module):
    """One residual block; see the module docstring for where the LayerNorms sit."""

    def __init__(self, config: TransformerConfig, max_len: int):
        super().__init__()
        self.placement = config.norm
        self.attn, self.mlp = Attention(config, max_len), MLP(config)
        self.norm1, self.norm2 = nn.LayerNorm(config.d_model), nn.LayerNorm(config.d_model)
        if config.norm == "peri":
            self.norm1_out, self.norm2_out = nn.LayerNorm(config.d_model), nn.LayerNorm(config.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        """Attention then MLP, each with its residual connection and LayerNorms."""
        if self.placement == "pre":
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        if self.placement == "post":
            x = self.norm1(x + self.attn(x))
            return self.norm2(x + self.mlp(x))
        x = x + self.norm1_out(self.attn(self.norm1(x)))
        return x + self.norm2_out(self.mlp(self.norm2(x)))


class TinyTransformer(nn.Module):
    """Decoder-only causal language model; ``forward(tokens (B, T) long) -> logits (B, T, V)``."""

    def __init__(self, config: TransformerConfig, vocab_size: int, max_len: int):
        super().__init__()
        self.config, self.max_len = config, max_len
        self.embed = nn.Embedding(vocab_size, config.d_model)
        self.pos = nn.Embedding(max_len, config.d_model)
        self.blocks = nn.ModuleList(Block(config, max_len) for _ in range(config.n_layers))
        self.norm_f = nn.LayerNorm(config.d_model) if config.norm != "post" else nn.Identity()
        self.unembed = nn.Linear(config.d_model, vocab_size, bias=False)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if name.endswith(("attn.o.weight", "mlp.down.weight")):
                p.normal_(0.0, residual_std)
            elif p.dim() == 2:  # embeddings and the other projections; LayerNorms keep (1, 0)
                p.normal_(0.0, 0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V)
        """Next-token logits (B, T, V) of token ids (B, T)."""
        t = tokens.shape[1]
        if t > self.max_len:
            raise ValueError(f"sequence length {t} exceeds the model's max_len {self.max_len}")
        x = self.embed(tokens) + self.pos.weight[:t]  # (B, T, d)
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.norm_f(x))


def build_transformer(config: TransformerConfig, vocab_size: int, max_len: int, seed: int) -> TinyTransformer:
    """The model with weights initialised from ``seed``; the global RNG state is left as it was.

    ``torch.nn`` layers draw from the global RNG while they are built, so this forks it under
    :data:`analysis_lib.training.rng.GLOBAL_RNG_LOCK` (runs in concurrent threads never share a seed).
    """
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyTransformer(config, vocab_size, max_len)


def matrix_names(model: TinyTransformer) -> list[tuple[str, str, str]]:
    """``(parameter name, layer, projection)`` of every block weight matrix, in forward order.

    E.g. ``("blocks.0.attn.q.weight", "blocks.0", "q")``; projections are :data:`PROJECTIONS`.
    Embeddings, the unembedding and LayerNorm parameters are not listed.
    """
    return [(f"blocks.{i}.{_PATHS[p]}.weight", f"blocks.{i}", p)
            for i in range(len(model.blocks)) for p in PROJECTIONS]
