"""Shared test cases as data: tiny models and problems every curvature, landscape and probe test uses.

Each case is small enough for a dense float64 Hessian (a few hundred parameters at most) and
covers one structure the code must get right: a smooth MLP, a 1-D CNN, BatchNorm (eval-mode
running statistics), a residual ReLU MLP, and a tiny transformer (LayerNorm, attention, a
sequence loss with a mask).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from analysis_lib.lm.config import TaskConfig, TransformerConfig
from analysis_lib.lm.tasks import VOCAB_SIZE, encode, sequence_length, task_splits
from analysis_lib.lm.transformer import build_transformer
from analysis_lib.training.config import ModelConfig, config_from_dict
from analysis_lib.training.models import build_model

# (name, ModelConfig, input features) of the classifier cases.
MODEL_CASES = [
    ("mlp-tanh", ModelConfig(kind="mlp", depth=2, width=6, activation="tanh"), 5),
    ("cnn", ModelConfig(kind="cnn", depth=2, width=3, kernel_size=3), 8),
    ("mlp-batchnorm", ModelConfig(kind="mlp", depth=2, width=5, norm="batch"), 4),
]
RELU_CASES = [
    ("mlp-relu", ModelConfig(kind="mlp", depth=2, width=5), 4),
    ("mlp-relu-residual", ModelConfig(kind="mlp", depth=3, width=5, residual=True), 4),
]
N_CLASSES = 3


def classification_problem(config: ModelConfig, n_features: int, seed: int = 0, n: int = 30):
    """(model in float64, x (n, F), y (n,)) with BatchNorm statistics that are not trivial."""
    gen = torch.Generator().manual_seed(seed)
    model = build_model(config, n_features, N_CLASSES, seed).double()
    if config.norm == "batch":  # non-trivial running statistics, so eval mode matters
        with torch.no_grad():
            model.train()(torch.randn(64, n_features, generator=gen, dtype=torch.float64))
    x = torch.randn(n, n_features, generator=gen, dtype=torch.float64)
    y = torch.randint(0, N_CLASSES, (n,), generator=gen)
    return model, x, y


def tiny_config(**sections):
    """A classification run that trains in well under a second (Gaussian mixture, small MLP, 12 steps)."""
    spec = {
        "data": {"name": "gaussian_mixture", "n_train": 120, "n_test": 60, "n_classes": 3, "n_features": 5},
        "model": {"kind": "mlp", "depth": 2, "width": 8},
        "train": {"optimizer": "sgd", "lr": 0.1, "batch_size": 30, "steps": 12},
        "probes": {"schedule": "every", "every": 3},
        "seed": 0,
    }
    for name, values in sections.items():
        spec[name] = {**spec.get(name, {}), **values} if isinstance(values, dict) else values
    return config_from_dict(spec)


def tiny_lm_config(**sections):
    """A tiny transformer run on 1-digit addition that trains in about a second."""
    from analysis_lib.lm.config import LMRunConfig

    spec = {
        "task": {"n_digits": 1, "n_train": 60, "n_test": 20},
        "model": {"n_layers": 2, "d_model": 8, "n_heads": 2, "d_mlp": 16},
        "train": {"steps": 8, "batch_size": 8, "warmup_steps": 2},
        "finetune": {"steps": 4},
        "probes": {"names": ["eval", "grad_norm"], "every": 4, "eval_problems": 10},
    }
    for name, values in sections.items():
        spec[name] = {**spec.get(name, {}), **values} if isinstance(values, dict) else values
    return config_from_dict(spec, LMRunConfig)


def sequence_problem(seed: int = 0, n: int = 6, length: int = 5, vocab: int = 7):
    """(tiny transformer in float64, tokens (n, T), (targets (n, T), mask (n, T))) with a ragged mask."""
    from analysis_lib.lm.config import TransformerConfig
    from analysis_lib.lm.transformer import build_transformer

    gen = torch.Generator().manual_seed(seed)
    model = build_transformer(TransformerConfig(n_layers=1, d_model=4, n_heads=2, d_mlp=6), vocab, length, seed)
    model = model.double()
    tokens = torch.randint(0, vocab, (n, length), generator=gen)
    targets = torch.randint(0, vocab, (n, length), generator=gen)
    mask = torch.rand(n, length, generator=gen) < 0.6
    mask[:, -1] = True  # every sequence has at least one loss token
    return model, tokens, (targets, mask)


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean cross-entropy, written here so references do not share the library's loss plumbing."""
    return -F.log_softmax(outputs, dim=-1).gather(-1, targets[:, None]).mean()

# Models of the landscape tests: BatchNorm and LayerNorm must be evaluated with fixed statistics.
LANDSCAPE_MODELS = {
    "mlp-batchnorm": ModelConfig(kind="mlp", depth=2, width=6, norm="batch"),
    "mlp-residual-layernorm": ModelConfig(kind="mlp", depth=3, width=5, norm="layer", residual=True),
    "cnn-batchnorm": ModelConfig(kind="cnn", depth=2, width=3, kernel_size=3, norm="batch"),
}


def landscape_problem(name: str, n: int = 23, features: int = 8, classes: int = 3):
    """A float64 model of :data:`LANDSCAPE_MODELS` with non-trivial BatchNorm running statistics, and (x, y)."""
    model = build_model(LANDSCAPE_MODELS[name], features, classes, seed=1).double()
    gen = torch.Generator().manual_seed(2)
    for buf_name, buf in model.named_buffers():
        if buf_name.endswith("running_mean"):
            buf.copy_(torch.randn(buf.shape, generator=gen, dtype=torch.float64))
        elif buf_name.endswith("running_var"):
            buf.copy_(torch.rand(buf.shape, generator=gen, dtype=torch.float64) + 0.5)
    x = torch.randn(n, features, generator=gen, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=gen)
    return model, x, y




def outlier_matrix(dim: int = 120, seed: int = 0) -> torch.Tensor:
    """Symmetric matrix with a few large outliers over a bulk near zero, like a Hessian."""
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    eig = torch.cat([torch.tensor([50.0, 30.0, 20.0, -5.0]), 0.3 * torch.randn(dim - 4, generator=gen)])
    return (Q * eig) @ Q.T


def random_walk(steps, dim: int, seed: int) -> torch.Tensor:
    """A Gaussian random walk observed at ``steps`` (increment variance ∝ elapsed steps), (S, dim)."""
    gen = torch.Generator().manual_seed(seed)
    gaps = torch.as_tensor(np.diff(steps), dtype=torch.float64)
    increments = torch.randn(len(gaps), dim, generator=gen, dtype=torch.float64) * gaps.sqrt()[:, None]
    start = torch.randn(1, dim, generator=gen, dtype=torch.float64)
    return torch.cat([start, start + increments.cumsum(0)])


# Study 06's design in miniature (the `twin_runs` fixture trains it once per session).
TWIN_BASE = {"data": {"name": "gaussian_mixture", "n_train": 120, "n_test": 60, "n_classes": 3, "n_features": 5},
             "model": {"kind": "mlp", "depth": 2, "width": 8},
             "train": {"optimizer": "sgd", "lr": 0.1, "batch_size": 30, "steps": 30},
             "probes": {"names": ["eval", "weights"], "every": 5}}
TWIN_SCALE = 1e-3


def twin_configs() -> list:
    """4 parents (seeds 0-3) and twins of seeds 0 and 1 perturbed at steps 0 and 10 by TWIN_SCALE."""
    from analysis_lib.studies.run_to_run import twin_grid

    return twin_grid(TWIN_BASE, [0, 1, 2, 3], [0, 1], [0, 10], TWIN_SCALE, 0)


# Sequence models of the per-example gradient and noise tests.
class TinySequenceModel(nn.Module):
    """Embedding, blocks of gated causal-mean token mixing (q, v, o) and a per-token MLP (up, down).

    Attention-free, but each token's output depends on earlier tokens, as in a decoder.
    """

    def __init__(self, vocab: int = 7, d: int = 5, hidden: int = 6, n_layers: int = 3, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # nn init draws from the global RNG: restore it
            torch.manual_seed(seed)
            self.embed = nn.Embedding(vocab, d)
            self.blocks = nn.ModuleList()
            for _ in range(n_layers):
                block = nn.Module()
                block.attn = nn.ModuleDict({p: nn.Linear(d, d, bias=p != "q") for p in ("q", "v", "o")})
                block.mlp = nn.ModuleDict({"up": nn.Linear(d, hidden), "down": nn.Linear(hidden, d)})
                self.blocks.append(block)
            self.head = nn.Linear(d, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V)
        h = self.embed(tokens)  # (B, T, d)
        steps = torch.arange(1, tokens.shape[1] + 1, dtype=h.dtype).view(1, -1, 1)
        for block in self.blocks:
            mixed = block.attn["v"](h).cumsum(dim=1) / steps  # causal mean over earlier tokens
            h = h + block.attn["o"](torch.tanh(block.attn["q"](h)) * mixed)
            h = h + block.mlp["down"](torch.tanh(block.mlp["up"](h)))
        return self.head(h)


def sequence_batch(b: int = 6, t: int = 8, vocab: int = 7, seed: int = 1):
    """(tokens, targets, mask) for :class:`TinySequenceModel`: responses of different lengths at the end."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(vocab, (b, t), generator=gen)
    targets = torch.randint(vocab, (b, t), generator=gen)
    mask = torch.zeros(b, t, dtype=torch.bool)
    for i in range(b):  # responses of different lengths at the end of each sequence
        mask[i, t - 1 - i % 4:] = True
    return tokens, targets, mask


def tiny_transformer_batch(n_problems: int = 4):
    """A 2-layer, d_model 8 transformer in float64 and slow-format 1-digit addition sequences."""
    config = TransformerConfig(n_layers=2, d_model=8, n_heads=2, d_mlp=12)
    model = build_transformer(config, VOCAB_SIZE, sequence_length(1, "slow"), seed=0).double()
    batch = encode(task_splits(TaskConfig(n_digits=1, n_train=n_problems, n_test=2))[0], "slow")
    return model, batch


# Tidy frames of the statistics tests; RTOL is their tolerance against scipy / statsmodels.
RTOL = 1e-12


def make_frame(effects_by_level=None, *, n_seeds=10, sd=0.1, seed_sd=0.5,
               layers=("fc1", "fc2"), metrics=("loss",), rng_seed=0) -> pd.DataFrame:
    """Tidy frame: value = seed intercept + level effect + N(0, sd) noise, one row per unit."""
    effects_by_level = effects_by_level or {"sgd": 0.0, "adam": 1.0}
    rng = np.random.default_rng(rng_seed)
    rows = []
    for seed in range(n_seeds):
        intercept = rng.normal(0.0, seed_sd)
        for level, effect in effects_by_level.items():
            for layer in layers:
                for metric in metrics:
                    rows.append(dict(run_id=f"{level}-{seed}", optimizer=level, seed=seed, step=100,
                                     layer=layer, metric=metric,
                                     value=intercept + effect + rng.normal(0.0, sd)))
    return pd.DataFrame(rows)


def slow_hedges_g(t, b):
    """Hedges' g written out: pooled SD, small-sample correction J."""
    n1, n2 = len(t), len(b)
    s = np.sqrt(((n1 - 1) * np.var(t, ddof=1) + (n2 - 1) * np.var(b, ddof=1)) / (n1 + n2 - 2))
    return (1 - 3 / (4 * (n1 + n2) - 9)) * (np.mean(t) - np.mean(b)) / s


def fail_seed(monkeypatch, seed: int) -> None:
    """Make every classifier run of ``seed`` raise ("simulated fault"), so the grid records it as failed."""
    from analysis_lib.training import classifier

    real = classifier.train_classifier

    def fails(config):
        if config.seed == seed:
            raise RuntimeError("simulated fault")
        return real(config)

    monkeypatch.setattr(classifier, "train_classifier", fails)
