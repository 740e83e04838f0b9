"""A concept dictionary: a layer's activations read through a learned sparse code (SAE or NMF). One file holds
it, in safetensors (tensors and a JSON record, no pickle: loading it cannot run code); this module reads and
writes that file and computes every concept's value, here and nowhere else."""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from studio.errors import StudioError
from studio.io import atomic_write

#: File name ending of a dictionary; a target's layer part that ends so names a dictionary file.
SUFFIX = ".concepts"
FORMAT = "feature-studio/concepts 1"
#: The record's key in the safetensors metadata.
RECORD_KEY = "feature-studio"
#: SAE variants (values are their linear encoder's pre-codes) and factorisations (values are their NNLS codes).
SAE_METHODS = ("topk", "batchtopk")
METHODS = (*SAE_METHODS, "nmf")
#: Most accelerated projected-gradient steps of an NMF encoding (min ||x - zD||, z >= 0); it stops on convergence.
NNLS_STEPS = 2000


@dataclass(eq=False)
class Dictionary:
    """``concepts`` atoms over ``channels`` of one layer, learned on standardised activations
    ``(x - mean) / scale``. ``encode`` gives the pre-codes (a sparse autoencoder's linear encoder; an NMF's
    non-negative least-squares code), ``codes`` the sparse code from them, ``values`` what a concept target
    reads, and ``reconstruct`` maps codes back to activations."""

    path: Path
    method: str
    atoms: torch.Tensor  # [K, C], in standardised units
    mean: torch.Tensor  # [C]
    scale: float
    encoder_weight: torch.Tensor | None = None  # [K, C]
    encoder_bias: torch.Tensor | None = None  # [K]
    threshold: torch.Tensor | None = None  # [1]: batchtopk's running threshold
    top_k: int | None = None
    frequency: torch.Tensor | None = None  # [K], share of the source's positions where each concept is active
    record: dict = field(default_factory=dict)
    sha256: str = ""
    _on: dict = field(default_factory=dict, repr=False)

    @property
    def concepts(self) -> int:
        return self.atoms.shape[0]

    @property
    def channels(self) -> int:
        return self.atoms.shape[1]

    @property
    def layer(self) -> str:
        """The module path (``named_modules`` name) it reads."""
        return self.record["layer"]

    @property
    def name(self) -> str:
        """How targets and indexes name it: the file's name (``blocks5.concepts``)."""
        return self.path.name

    def _tensors(self, device: torch.device) -> dict[str, torch.Tensor]:
        """Its tensors on ``device`` (float32), moved once per device; NMF's Gram matrix and step size with them."""
        if device not in self._on:
            moved = {name: tensor.to(device, torch.float32) for name, tensor in
                     {"atoms": self.atoms, "mean": self.mean, "weight": self.encoder_weight,
                      "bias": self.encoder_bias, "threshold": self.threshold}.items() if tensor is not None}
            if self.method == "nmf":
                gram = moved["atoms"] @ moved["atoms"].T
                moved["gram"], moved["step"] = gram, 1 / torch.linalg.matrix_norm(gram, 2).clamp_min(1e-12)
            self._on[device] = moved
        return self._on[device]

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """Activations with channels last, ``[..., C]``, in the units the dictionary was learned in."""
        return (x.float() - self._tensors(x.device)["mean"]) / self.scale

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Each concept's pre-code for activations with channels last, ``[..., C]`` → ``[..., K]``: a sparse
        autoencoder's linear encoder; for NMF, the input of a projected-gradient step from the solved NNLS code
        (linear in ``x``; its ReLU is the code, a fixed point of that step)."""
        t, z = self._tensors(x.device), self.standardise(x)
        if self.method != "nmf":
            return z @ t["weight"].T + t["bias"]
        target = z @ t["atoms"].T
        code = self._nnls(target.detach(), t)
        return code - (code @ t["gram"] - target) * t["step"]

    def _nnls(self, target: torch.Tensor, t: dict) -> torch.Tensor:
        """``argmin_{z >= 0} ||x - z D||²`` from ``target = x Dᵀ`` by FISTA, to a relative change of 1e-6."""
        code = momentum = previous = torch.zeros_like(target)
        with torch.no_grad():
            for step in range(1, NNLS_STEPS + 1):
                code = torch.relu(momentum - (momentum @ t["gram"] - target) * t["step"])
                if step % 25 == 0 and (code - previous).abs().max() <= 1e-6 * code.abs().max().clamp_min(1e-12):
                    break
                momentum = code + (step - 1) / (step + 2) * (code - previous)
                previous = code
        return code

    def values(self, activation: torch.Tensor) -> torch.Tensor:
        """Channels-first activations ``[B, C, *spatial]`` read as concepts, ``[B, K, *spatial]``: the sparse
        code, whose gradient is the pre-code's (straight through), so a concept that is not active still has
        a gradient to climb."""
        if activation.shape[1] != self.channels:
            raise StudioError(f"Dictionary {self.name!r} reads {self.channels} channels, but the activation has "
                              f"{activation.shape[1]}.")
        pre = self.encode(activation.movedim(1, -1))
        return (pre + (self.codes(pre) - pre).detach()).movedim(-1, 1)

    def codes(self, values: torch.Tensor) -> torch.Tensor:
        """The sparse code from pre-codes (channels last, ``[..., K]``), as the method defines it: the k
        largest (topk), those over the learned threshold (batchtopk), the NNLS code (nmf: the ReLU)."""
        positive = torch.relu(values)
        if self.method == "topk":
            top = positive.topk(min(self.top_k, self.concepts), dim=-1)
            return torch.zeros_like(positive).scatter(-1, top.indices, top.values)
        if self.method == "batchtopk":
            return positive * (positive >= self._tensors(values.device)["threshold"])
        return positive

    def reconstruct(self, codes: torch.Tensor) -> torch.Tensor:
        """Activations (channels last) from sparse codes: ``codes @ atoms`` back in the layer's units."""
        t = self._tensors(codes.device)
        return codes @ t["atoms"] * self.scale + t["mean"]

    def describe(self) -> str:
        """``512 topk concepts of blocks.5 (EfficientNet-Lite0), R² 0.81, mean L0 31.8, 3 dead``."""
        quality = self.record.get("quality", {})
        numbers = "".join(f", {label} {quality[key]:{fmt}}" for key, label, fmt in
                          (("r2", "R²", ".3f"), ("l0", "mean L0", ".1f")) if key in quality)
        dead = f", {quality['dead']} dead" if "dead" in quality else ""
        layer = self.record.get("layer_name") or self.layer
        return f"{self.concepts} {self.method} concepts of {layer} ({self.record.get('model', '?')}){numbers}{dead}"

    def numbers(self, concept: int) -> dict:
        """What is known of one concept and its dictionary, for a manifest: the file, its hash, the method,
        R², mean L0, dead concepts, and how often this concept is active over the source's positions."""
        quality = self.record.get("quality", {})
        frequency = None if self.frequency is None else float(self.frequency[concept])
        return {"dictionary": self.name, "sha256": self.sha256, "method": self.method, "concepts": self.concepts,
                "r2": quality.get("r2"), "l0": quality.get("l0"), "dead": quality.get("dead"), "frequency": frequency}

    def line(self, concept: int) -> str:
        """``concept 17: active at 3.1% of positions · 512 topk concepts of blocks.5 (...), R² 0.81, ...``."""
        frequency = "" if self.frequency is None else f": active at {float(self.frequency[concept]):.1%} of positions"
        return f"concept {concept}{frequency} · {self.describe()}"


def is_dictionary_name(text: str) -> bool:
    """Whether a target's layer part names a dictionary file (it ends in ``.concepts``)."""
    return text.strip().lower().endswith(SUFFIX) and len(text.strip()) > len(SUFFIX)


def save_dictionary(path: str | os.PathLike, tensors: dict[str, torch.Tensor], record: dict) -> Path:
    """Write a dictionary file atomically: ``tensors`` (atoms, mean, scale, encoder, threshold, frequency) and
    ``record`` (model, layer, method, settings, source, quality) as JSON in the safetensors header."""
    from safetensors.torch import save_file

    path = Path(path)
    if not is_dictionary_name(path.name):
        raise StudioError(f"Name the dictionary file with the {SUFFIX} ending (e.g. blocks5{SUFFIX}), not {path.name!r}: "
                          "targets find dictionaries by it.")
    tensors = {name: tensor.detach().to("cpu", torch.float32).contiguous() for name, tensor in tensors.items()}
    metadata = {RECORD_KEY: json.dumps({"format": FORMAT, **record}, sort_keys=True)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


#: Loaded dictionaries by absolute path, with the (size, mtime) they were read at.
_LOADED: dict[str, tuple[tuple[int, int, int], Dictionary]] = {}


def load_dictionary(path: str | os.PathLike) -> Dictionary:
    """Read a dictionary file (no code runs: safetensors holds only tensors and text); kept until it changes.
    Errors say what is wrong with the file in one sentence."""
    path = Path(path).expanduser().resolve()
    try:
        status = path.stat()
    except OSError:
        raise StudioError(f"No concept dictionary at {str(path)!r}; learn one with `studio concepts MODEL FOLDER "
                          f"--layer LAYER --out {path.name}`.") from None
    stamp = (status.st_size, status.st_mtime_ns, status.st_ino)  # a rewrite (atomic: a new inode) is seen
    known = _LOADED.get(str(path))
    if known is None or known[0] != stamp:
        known = stamp, _read(path)
        _LOADED[str(path)] = known
    return known[1]


def _read(path: Path) -> Dictionary:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        data = path.read_bytes()  # read once: the tensors, the header's record and the hash all come from it
        tensors = load(data)
        metadata = json.loads(data[8:8 + int.from_bytes(data[:8], "little")]).get("__metadata__") or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise StudioError(f"{str(path)!r} is not a concept dictionary (a safetensors file): {error}.") from None
    try:
        record = json.loads(metadata[RECORD_KEY])
        if not isinstance(record, dict):
            raise TypeError
    except (KeyError, TypeError, json.JSONDecodeError):
        raise StudioError(f"{str(path)!r} is a safetensors file without a Feature Studio record; it is not a "
                          "concept dictionary written by `studio concepts`.") from None
    if record.get("format") != FORMAT:
        raise StudioError(f"{str(path)!r} is in format {record.get('format')!r}; this studio reads {FORMAT!r}.")
    method = record.get("method")
    needed = {"atoms", "mean", "scale", *(("encoder_weight", "encoder_bias") if method in SAE_METHODS else ()),
              *(("threshold",) if method == "batchtopk" else ())}
    if method not in METHODS or not needed <= set(tensors) or "layer" not in record:
        raise StudioError(f"{str(path)!r} is an incomplete concept dictionary (method {method!r}, tensors "
                          f"{sorted(tensors)}); learn it again with `studio concepts`.")
    atoms, top_k = tensors["atoms"], record.get("top_k")
    concepts, channels = atoms.shape if atoms.dim() == 2 and atoms.numel() else (-1, -1)
    shapes = {"atoms": (concepts, channels), "mean": (channels,), "scale": (1,), "threshold": (1,),
              "encoder_weight": (concepts, channels), "encoder_bias": (concepts,), "frequency": (concepts,)}
    wrong = [name for name, shape in shapes.items() if name in tensors and tuple(tensors[name].shape) != shape]
    if method == "topk" and not (isinstance(top_k, int) and top_k >= 1):
        wrong.append("top_k")
    scale = float(tensors["scale"].reshape(-1)[0]) if not wrong else math.nan
    if wrong or not math.isfinite(scale) or scale <= 0 or not all(t.isfinite().all() for t in tensors.values()):
        raise StudioError(f"{str(path)!r} holds inconsistent tensors ({', '.join(wrong) or 'non-finite values'}); "
                          "learn the dictionary again.")
    return Dictionary(path, method, atoms, tensors["mean"], scale, tensors.get("encoder_weight"),
                      tensors.get("encoder_bias"), tensors.get("threshold"), top_k,
                      tensors.get("frequency"), record, hashlib.sha256(data).hexdigest())
