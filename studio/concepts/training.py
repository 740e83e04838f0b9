"""Training a dictionary on standardised rows with Overcomplete (the optional ``feature-studio[concepts]``
extra): TopK, BatchTopK and JumpReLU sparse autoencoders with their library's losses and training loop, and
NMF with its HALS solver. Returns the plain tensors a dictionary file holds, so that reading concepts back
needs neither Overcomplete nor pickle."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, TensorDataset
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
    small sets, so that a pass has 8 steps) at learning rate ``lr``; ``seed`` fixes the initialisation."""

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
        """The batch for ``rows`` samples: ``batch``, or smaller so that one pass takes 8 steps."""
        return max(1, min(self.batch, max(32, rows // 8)))

    def epochs_for(self, rows: int) -> int:
        """The passes over ``rows`` samples: ``epochs``, or enough for :data:`MIN_STEPS` steps (10 at least)."""
        if self.epochs is not None:
            return self.epochs
        return max(10, math.ceil(MIN_STEPS / math.ceil(rows / self.batch_for(rows))))

    def check(self, rows: int, channels: int) -> None:
        """One-sentence errors for settings no dictionary can be trained with."""
        if self.method not in METHODS:
            raise StudioError(f"Unknown dictionary method {self.method!r}; choose one of {', '.join(METHODS)}.")
        for name in ("concepts", "epochs", "batch"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise StudioError(f"--{name} must be at least 1, not {getattr(self, name)}.")
        if self.top_k is not None and not 1 <= self.top_k <= self.concepts:
            raise StudioError(f"--top-k must be between 1 and the {self.concepts} concepts, not {self.top_k}.")
        if not self.lr > 0:
            raise StudioError(f"The learning rate must be positive, not {self.lr}.")
        if self.method == "nmf" and self.concepts > min(rows, channels) and rows < self.concepts:
            raise StudioError(f"NMF of {self.concepts} concepts needs at least as many samples; there are {rows}.")


def overcomplete():
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
    torch.manual_seed(settings.seed)
    if settings.method == "nmf":
        return _nmf(rows, settings, device)
    return _sae(rows, settings, device, progress)


def _sae(rows: torch.Tensor, settings: TrainingSettings, device: torch.device, progress: bool) -> dict:
    from overcomplete.sae import BatchTopKSAE, TopKSAE, train_sae
    from overcomplete.sae.losses import top_k_auxiliary_loss

    channels, concepts = rows.shape[1], settings.concepts
    if settings.method == "topk":
        sae = TopKSAE(channels, concepts, top_k=settings.k, device=str(device))
    else:  # BatchTopK keeps the k * batch largest codes of a whole batch, then a running threshold
        sae = BatchTopKSAE(channels, concepts, top_k=settings.k * settings.batch_for(len(rows)), device=str(device))
    linear = _encoder_linear(sae)
    with torch.no_grad():  # the encoder starts as the decoder's transpose (Gao et al. 2024): fewer dead concepts
        linear.weight.copy_(sae.dictionary._weights / sae.dictionary._weights.norm(dim=1, keepdim=True))
        linear.bias.zero_()
    batch = settings.batch_for(len(rows))
    loader = DataLoader(TensorDataset(rows), batch_size=batch, shuffle=True, drop_last=len(rows) > batch,
                        generator=torch.Generator().manual_seed(settings.seed))
    optimizer = torch.optim.Adam(sae.parameters(), lr=settings.lr)
    for _ in tqdm(range(settings.epochs_for(len(rows))), unit="epoch", desc=f"training {concepts} {settings.method} concepts",
                  disable=not progress):
        train_sae(sae, loader, top_k_auxiliary_loss, optimizer, nb_epochs=1, monitoring=0, device=str(device))
    sae.eval()
    tensors = {"atoms": sae.get_dictionary().detach(), "encoder_weight": linear.weight.detach(),
               "encoder_bias": linear.bias.detach()}
    if settings.method == "batchtopk":
        tensors["threshold"] = sae.running_threshold.detach().reshape(1)
    return tensors


def _encoder_linear(sae) -> torch.nn.Linear:
    """The default encoder's one linear map (Overcomplete's ``linear`` encoder: Linear, no norm, then ReLU)."""
    block = getattr(sae.encoder, "final_block", None)
    linear = block[0] if isinstance(block, torch.nn.Sequential) and len(block) else None
    if not isinstance(linear, torch.nn.Linear) or getattr(sae.encoder, "mlp_blocks", [None]):
        raise StudioError("This Overcomplete version builds SAE encoders this studio cannot export; install "
                          "overcomplete 0.3.")
    return linear


def _nmf(rows: torch.Tensor, settings: TrainingSettings, device: torch.device) -> dict:
    from overcomplete.optimization import NMF

    if rows.min() < 0:
        raise StudioError(f"NMF needs non-negative activations, and this layer's reach {rows.min():.3g}; use "
                          "--method topk, or a layer after a ReLU.")
    nmf = NMF(settings.concepts, device=str(device), solver="hals")
    nmf.fit(rows.to(device), max_iter=(settings.epochs or 30) * 10)
    return {"atoms": nmf.get_dictionary().detach()}
