"""Training a dictionary on standardised rows with Overcomplete (the optional ``feature-studio[concepts]``
extra): TopK and BatchTopK sparse autoencoders with their library's AuxK loss and training loop, and
NMF with its HALS solver. Returns the plain tensors a dictionary file holds, so that reading concepts back
needs neither Overcomplete nor pickle."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

import torch
from tqdm import tqdm

from studio.concepts.dictionary import METHODS
from studio.errors import StudioError

#: Optimiser steps an SAE trains for unless told the epochs (Overcomplete's own examples train for thousands).
MIN_STEPS = 3000


@dataclass(frozen=True)
class TrainingSettings:
    """How a dictionary is trained: ``concepts`` atoms; ``top_k`` active per row (topk, batchtopk; default
    ``concepts // 16``); ``epochs`` passes (default: enough for :data:`MIN_STEPS` optimiser steps, at least
    10; NMF: ``epochs * 10`` solver iterations, default 300) over batches of at most ``batch`` rows (fewer for
    small sets: an eighth of them, 32 at least) at learning rate ``lr``; ``seed`` fixes the initialisation."""

    method: str = "topk"
    concepts: int = 512
    top_k: int | None = None
    epochs: int | None = None
    batch: int = 1024
    lr: float = 1e-3
    seed: int = 0

    @property
    def k(self) -> int:
        return max(1, min(self.concepts, self.top_k or self.concepts // 16))

    def batch_for(self, rows: int) -> int:
        """The batch for ``rows`` samples: ``batch``, or an eighth of the rows (32 at least, all at most)."""
        return max(1, min(self.batch, max(32, rows // 8), rows))

    def epochs_for(self, rows: int) -> int:
        """The passes over ``rows`` samples: ``epochs``, or enough for :data:`MIN_STEPS` steps (10 at least)."""
        if self.epochs is not None:
            return self.epochs
        return max(10, math.ceil(MIN_STEPS / math.ceil(rows / self.batch_for(rows))))

    def check(self, rows: int | None = None) -> None:
        """One-sentence errors for settings no dictionary can be trained with (on ``rows`` samples, once known)."""
        if self.method not in METHODS:
            raise StudioError(f"Unknown dictionary method {self.method!r}; choose one of {', '.join(METHODS)}.")
        for name in ("concepts", "epochs", "batch"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise StudioError(f"--{name} must be at least 1, not {getattr(self, name)}.")
        if self.top_k is not None and not 1 <= self.top_k <= self.concepts:
            raise StudioError(f"--top-k must be between 1 and the {self.concepts} concepts, not {self.top_k}.")
        if not self.lr > 0:
            raise StudioError(f"The learning rate must be positive, not {self.lr}.")
        if rows is not None and self.method == "nmf" and rows < self.concepts:
            raise StudioError(f"NMF of {self.concepts} concepts needs at least as many samples; there are {rows}.")


def overcomplete() -> ModuleType:
    """The Overcomplete package, or the one sentence that says how to install it."""
    try:
        import overcomplete as library
    except ImportError as error:
        raise StudioError(f"Learning concepts needs Overcomplete ({error}); install it with "
                          "pip install 'feature-studio[concepts]'.") from None
    return library


def train(rows: torch.Tensor, settings: TrainingSettings, device: torch.device,
          progress: bool = True) -> dict[str, torch.Tensor]:
    """Train on standardised ``rows [N, C]``: ``atoms [K, C]``, plus the encoder (``encoder_weight``,
    ``encoder_bias``) and ``threshold`` of an SAE."""
    overcomplete()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the caller's RNG is left as it was
        torch.manual_seed(settings.seed)
        if settings.method == "nmf":
            return _nmf(rows, settings, device)
        return _sae(rows, settings, device, progress)


def _sae(rows: torch.Tensor, settings: TrainingSettings, device: torch.device, progress: bool) -> dict:
    return export(fit_sae(rows, settings, device, progress), settings.method)


def fit_sae(rows: torch.Tensor, settings: TrainingSettings, device: torch.device, progress: bool = False):
    """A TopK or BatchTopK SAE of Overcomplete trained on ``rows`` with its ``train_sae`` and AuxK loss, in
    eval mode (its dictionary fused, BatchTopK's running threshold in use)."""
    from overcomplete.sae import BatchTopKSAE, TopKSAE, train_sae
    from overcomplete.sae.losses import top_k_auxiliary_loss

    channels, concepts, batch = rows.shape[1], settings.concepts, settings.batch_for(len(rows))
    if settings.method == "topk":
        sae = TopKSAE(channels, concepts, top_k=settings.k, device=str(device))
    else:  # BatchTopK keeps the k * batch largest codes of a whole batch, then a running threshold
        sae = BatchTopKSAE(channels, concepts, top_k=settings.k * batch, device=str(device))
    linear = _encoder_linear(sae)
    with torch.no_grad():  # the encoder starts as the decoder's transpose (Gao et al. 2024): fewer dead concepts
        linear.weight.copy_(sae.dictionary._weights / sae.dictionary._weights.norm(dim=1, keepdim=True))
        linear.bias.zero_()
    optimizer = torch.optim.Adam(sae.parameters(), lr=settings.lr)
    generator = torch.Generator().manual_seed(settings.seed)
    rows = rows.to(device)
    for _ in tqdm(range(settings.epochs_for(len(rows))), unit="epoch", desc=f"training {concepts} {settings.method} concepts",
                  disable=not progress):
        train_sae(sae, shuffled_batches(rows, batch, generator), top_k_auxiliary_loss, optimizer, nb_epochs=1,
                  monitoring=0, device=str(device))
    return sae.eval()


def shuffled_batches(rows: torch.Tensor, batch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """One pass over ``rows`` in random batches of ``batch`` (a short last one dropped when there are more),
    cut by indexing: a ``DataLoader`` over a ``TensorDataset`` gathers and stacks every row in Python, which
    costs more than a small SAE's step."""
    order = torch.randperm(len(rows), generator=generator).to(rows.device)
    for start in range(0, len(rows) - batch + 1 if len(rows) > batch else 1, batch):
        yield rows[order[start:start + batch]]


def export(sae, method: str) -> dict[str, torch.Tensor]:
    """The tensors that compute what an eval-mode SAE computes: its encoder's linear map, its fused dictionary
    and (BatchTopK) its running threshold."""
    linear = _encoder_linear(sae)
    tensors = {"atoms": sae.get_dictionary().detach(), "encoder_weight": linear.weight.detach(),
               "encoder_bias": linear.bias.detach()}
    if method == "batchtopk":
        tensors["threshold"] = sae.running_threshold.detach().reshape(1)
    return tensors


def _encoder_linear(sae) -> torch.nn.Linear:
    """The default encoder's one linear map (Overcomplete's ``linear`` encoder: Linear, no norm, then ReLU);
    any other structure would export a different encoder, so it is refused."""
    encoder = sae.encoder
    block = getattr(encoder, "final_block", None)
    plain = (isinstance(block, torch.nn.Sequential) and len(block) == 2 and isinstance(block[0], torch.nn.Linear)
             and isinstance(block[1], torch.nn.Identity)
             and isinstance(getattr(encoder, "final_activation", None), torch.nn.ReLU))
    if not plain or getattr(encoder, "mlp_blocks", [None]):
        raise StudioError("This Overcomplete version builds SAE encoders this studio cannot export; install "
                          "overcomplete 0.3.")
    return block[0]


def _nmf(rows: torch.Tensor, settings: TrainingSettings, device: torch.device) -> dict:
    from overcomplete.optimization import NMF

    if rows.min() < 0:
        raise StudioError("NMF needs non-negative activations, and this layer's go below 0; use --method topk, "
                          "or a layer after a ReLU.")
    nmf = NMF(settings.concepts, device=str(device), solver="hals")
    nmf.fit(rows.to(device), max_iter=(settings.epochs or 30) * 10)
    return {"atoms": nmf.get_dictionary().detach()}
