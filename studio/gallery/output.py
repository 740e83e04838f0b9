"""Gallery files: per-image PNG + animation + provenance sidecar, attribution overlays, dataset-example crops,
contact sheets and ``manifest.json`` (the HTML pages are ``studio.gallery.pages``). Every file is written
atomically (temp file + rename); an image's sidecar JSON is written last, so its presence (with a matching key)
means the image is complete.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from studio.concepts.dictionary import load_dictionary
from studio.gallery.spec import GallerySpec, Item, OutputOptions, Unit
from studio.io import atomic_write, is_rgb_image, to_uint8, write_image, write_json, write_stack
from studio.targets import safe_name

MANIFEST = "manifest.json"
INDEX = "index.html"
LOCK = ".lock"
FORMAT = "feature-studio-gallery/1"
#: Smallest contact-sheet tile (pixels) when [output] tile is not set: smaller renders are upscaled.
MIN_TILE = 96
#: Side of the thumbnail written beside a larger render (a canvas), what sheets and pages show.
THUMBNAIL = 256
#: Temporary files left by ``atomic_write`` when a process is killed mid-write: ``.NAME.XXXXXXXX.SUFFIX``.
_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}(\.[A-Za-z0-9]+)?$")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict[str, str]:
    """Versions of everything that can change a rendered image."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in ("feature-studio", "torch", "torchvision", "kornia", "timm", "numpy", "imageio"):
        try:
            versions["studio" if name == "feature-studio" else name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    versions["cuda"] = torch.version.cuda or "none"
    if torch.backends.cudnn.is_available():
        versions["cudnn"] = str(torch.backends.cudnn.version())
    return versions


def describe_device(device: torch.device) -> dict:
    """The device and what makes its numbers what they are (GPU name, or CPU threads)."""
    info = {"device": str(device), "torch_threads": torch.get_num_threads(), "machine": platform.machine()}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return info


# ---------------------------------------------------------------------------------------------- paths

def image_path(item: Item) -> str:
    return f"{item.unit.path}_s{item.seed}.png"


def thumbnail_path(item: Item) -> str:
    return f"{item.unit.path}_s{item.seed}.thumb.png"


def sidecar_path(item: Item) -> str:
    return f"{item.unit.path}_s{item.seed}.json"


def animation_path(item: Item, kind: str) -> str:
    return f"{item.unit.path}_s{item.seed}.{kind}"


#: What follows a unit's path stem in the names of its own files (not one seed's): markers and its page.
ATTRIBUTION_MARKER, EXAMPLES_MARKER, UNIT_PAGE = ".attribution.json", ".examples.json", ".html"


def unit_file(unit: Unit, suffix: str) -> str:
    """A unit's own file: ``model/layer/c012`` and ``suffix`` (``.html``, ``.example03.png``)."""
    return f"{unit.path}{suffix}"


def overlay_path(unit: Unit, method: str, index: int, photo: Path) -> str:
    return unit_file(unit, f".{safe_name(method)}.{index:02d}_{safe_name(photo.stem)}.png")


def sheet_path(model: str, layer_dir: str, kind: str = "") -> str:
    """A layer's contact sheet, ``kind`` ``"examples"`` for the one with dataset examples beside each render."""
    return f"sheets/{model}__{layer_dir}{'.' + kind if kind else ''}.png"


def read_json(path: Path) -> dict | None:
    """A JSON file's content, or ``None`` when it is missing or unreadable (then the work is redone)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete temp files that a killed run left behind (only the ``atomic_write`` pattern, never ``.lock``)."""
    removed = []
    for path in out.rglob(".*"):
        if path.is_file() and path.name != LOCK and _TEMP.match(path.name):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


# ---------------------------------------------------------------------------------------------- images

def complete(out: Path, item: Item, output: OutputOptions) -> dict | None:
    """The item's sidecar if the item is done with the same key, its files intact (and an animation, when
    one is wanted)."""
    sidecar = read_json(out / sidecar_path(item))
    if not sidecar or sidecar.get("key") != item.key or not intact(out, sidecar):
        return None
    if output.animation != "none":
        animation = sidecar.get("files", {}).get("animation")
        if not animation or not animation.endswith(f".{output.animation}") or not (out / animation).is_file():
            return None
    return sidecar


def write_animation(path: Path, frames: Sequence[np.ndarray], fps: float) -> Path:
    """An optimisation trajectory as a looping GIF or an MP4 (by suffix), written atomically with imageio."""
    stack = np.stack(frames)
    if path.suffix == ".gif":
        return atomic_write(path, lambda tmp: iio.imwrite(tmp, stack, extension=".gif", duration=1000 / fps, loop=0))
    even = stack[:, : stack.shape[1] // 2 * 2, : stack.shape[2] // 2 * 2]  # H.264 needs even sizes
    return atomic_write(path, lambda tmp: iio.imwrite(tmp, even, extension=".mp4", fps=fps))


def write_item(out: Path, item: Item, image: torch.Tensor, frames: Sequence[np.ndarray] | None, record: dict,
               output: OutputOptions) -> dict:
    """PNG, then animation, then the sidecar (last: its presence marks the item complete)."""
    files = {"image": image_path(item)}
    picture = to_uint8(image)
    write_image(out / files["image"], picture)
    if max(picture.shape[:2]) > THUMBNAIL:
        files["thumbnail"] = thumbnail_path(item)
        write_image(out / files["thumbnail"], thumbnail(picture))
    if not is_rgb_image(image):  # the PNG is a preview (projection, composite): keep the data beside it
        files["data"] = image_path(item).removesuffix(".png") + ".tif"
        write_stack(out / files["data"], image)
    if frames:
        files["animation"] = animation_path(item, output.animation)
        write_animation(out / files["animation"], frames, output.fps)
    sidecar = {**record, "files": files, "sha256": {name: file_digest(out / path) for name, path in files.items()}}
    write_json(out / sidecar_path(item), sidecar)
    return sidecar


def thumbnail(picture: np.ndarray, side: int = THUMBNAIL) -> np.ndarray:
    """A picture (``H x W x 3`` uint8) shrunk smoothly so its longer side is ``side``."""
    from PIL import Image

    image = Image.fromarray(picture)
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    return np.asarray(image)


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes: what the sidecar promises, so a truncated or altered file is found."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def intact(out: Path, sidecar: dict) -> bool:
    """Every file a sidecar or marker lists exists with the bytes it recorded (a file cut short by a full disk or a
    copy, or altered since, is not; nor is a sidecar from before digests were recorded)."""
    files, digests = sidecar.get("files"), sidecar.get("sha256")
    if not isinstance(files, dict) or not isinstance(digests, dict) or set(files) != set(digests):
        return False
    return all((out / path).is_file() and file_digest(out / path) == digests[name] for name, path in files.items())


# ---------------------------------------------------------------------------------------------- contact sheets

def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _fit_text(draw, text: str, font, width: int) -> str:
    while text and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…" if len(text) > 2 else ""
    return text


def contact_sheet(tiles: Sequence[np.ndarray], labels: Sequence[str] | None, columns: int | None = None,
                  tile: int | None = None, title: str = "") -> np.ndarray:
    """A white, print-ready grid of ``H x W x 3`` uint8 tiles with an optional label under each and a title."""
    from PIL import Image, ImageDraw

    side = tile or max(tiles[0].shape[0], MIN_TILE)
    columns = min(columns or int(np.ceil(np.sqrt(len(tiles)))), len(tiles))
    rows = -(-len(tiles) // columns)
    gap = max(2, side // 24)
    font_size = max(12, side // 6)
    label_h = int(font_size * 1.5) if labels else 0
    title_h = int(font_size * 2.2) if title else 0
    width = columns * side + (columns + 1) * gap
    height = title_h + rows * (side + label_h) + (rows + 1) * gap
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font(font_size)
    if title:
        draw.text((gap, title_h // 2 + gap // 2), _fit_text(draw, title, _font(int(font_size * 1.2)), width - 2 * gap),
                  fill="black", font=_font(int(font_size * 1.2)), anchor="lm")
    for index, array in enumerate(tiles):
        row, column = divmod(index, columns)
        x = gap + column * (side + gap)
        y = title_h + gap + row * (side + label_h + gap)
        image = Image.fromarray(array)
        if image.size != (side, side):  # upscale small renders crisply, downscale smoothly
            smaller = image.size[0] < side
            image = image.resize((side, side), Image.Resampling.NEAREST if smaller else Image.Resampling.LANCZOS)
        sheet.paste(image, (x, y))
        if labels:
            text = _fit_text(draw, labels[index], font, side)
            draw.text((x + side / 2, y + side + label_h / 2), text, fill="black", font=font, anchor="mm")
    return np.asarray(sheet)


def tile_label(item: Item, several_seeds: bool) -> str:
    text = item.unit.target.unit_label
    return f"{text} s{item.seed}" if several_seeds else text


def render_tile(out: Path, item: Item) -> np.ndarray:
    """An item's PNG (its thumbnail, for a large one) as ``H x W x 3`` uint8, the tile it is on every sheet."""
    files = (read_json(out / sidecar_path(item)) or {}).get("files", {})
    return iio.imread(out / files.get("thumbnail", image_path(item)))[..., :3]


def _by_layer(spec: GallerySpec) -> dict[tuple[str, str], list[Item]]:
    """The items of each model and layer, in spec order (seeds side by side)."""
    layers: dict[tuple[str, str], list[Item]] = {}
    for item in sorted(spec.items, key=lambda i: (i.unit.order, i.seed)):
        layers.setdefault((item.unit.model, item.unit.layer_dir), []).append(item)
    return layers


def _sheet_title(model: str, items: list[Item]) -> str:
    first = items[0].settings
    detail = f"{first.describe()}, {first.steps} steps" if len({i.settings for i in items}) == 1 else "mixed settings"
    target = items[0].unit.target
    quality = f" · {load_dictionary(target.concepts).describe()}" if target.concepts else ""
    return f"{model} · {target.layer_name} · {detail}{quality}"


def _examples_rows(out: Path, items: list[Item], markers: dict[str, dict], several: bool
                   ) -> tuple[list[np.ndarray], list[str], int]:
    """One row per render: its tile, then its unit's crops with its map over them where it has one (scores as
    labels), padded with white tiles."""
    columns = 1 + max(len(markers[item.unit.path]["examples"]) for item in items)
    tiles, labels = [], []
    for item in items:
        crops = markers[item.unit.path]["examples"]
        blank = columns - 1 - len(crops)
        render = render_tile(out, item)
        tiles += [render, *(iio.imread(out / (crop.get("map") or crop["file"]))[..., :3] for crop in crops),
                  *[np.full_like(render, 255)] * blank]
        labels += [tile_label(item, several), *(f"{crop['score']:.3g}" for crop in crops), *[""] * blank]
    return tiles, labels, columns


def write_sheets(out: Path, spec: GallerySpec, markers: dict[str, dict]) -> list[str]:
    """One contact sheet per model and layer, and beside it, where its units have dataset examples (``markers``
    by unit path), one whose rows are a render followed by its crops; returns their paths."""
    options, written = spec.output, []
    for (model, layer_dir), items in _by_layer(spec).items():
        several = len({i.seed for i in items}) > 1
        title = _sheet_title(model, items)
        labels = [tile_label(i, several) for i in items]
        sheets = {"": ([render_tile(out, i) for i in items], labels, options.columns, title)}
        shown = [i for i in items if i.unit.path in markers]
        if shown:
            sheets["examples"] = (*_examples_rows(out, shown, markers, several), f"{title} · dataset examples")
        for kind, (tiles, labels, columns, heading) in sheets.items():
            sheet = contact_sheet(tiles, labels if options.labels else None, columns, options.tile, heading)
            relative = sheet_path(model, layer_dir, kind)
            atomic_write(out / relative,
                         lambda tmp, sheet=sheet: iio.imwrite(tmp, sheet, extension=".png", dpi=(options.dpi,) * 2))
            written.append(relative)
    return written


# ---------------------------------------------------------------------------------------------- manifest, index

def dataset_numbers(item: Item, marker: dict | None) -> dict:
    """A render's numbers beside its dataset (from its unit's examples marker): the unit's dataset maximum, the
    render's value as a multiple of it, the path check (score, flag, natural range) and the crops; ``None``s
    for a unit without examples."""
    render = (marker or {}).get("renders", {}).get(item.id)
    if render is None:
        return {"dataset_max": None, "of_dataset_max": None, "path": None, "examples": None}
    check = render["path_check"]
    path = check and {"score": check["score"], "flagged": check["flagged"],
                      "natural": [min(check["natural"]), max(check["natural"])]}
    return {"dataset_max": render["dataset"]["maximum"], "of_dataset_max": render["dataset"]["multiple"],
            "path": path, "examples": [crop["file"] for crop in marker["examples"]]}


def concept_numbers(item: Item) -> dict | None:
    """A concept unit's dictionary and its quality (R², L0, dead concepts, this concept's frequency); None for
    a channel."""
    target = item.unit.target
    return load_dictionary(target.concepts).numbers(target.channel) if target.concepts and target.channel is not None else None


def write_manifest(out: Path, spec: GallerySpec, sidecars: dict[str, dict], attributions: dict[str, dict],
                   markers: dict[str, dict], sheets: list[str]) -> dict:
    """``manifest.json``: the spec (its text too), models, every item with its files, activation and numbers
    beside the dataset, sheets."""
    items = []
    for item in spec.items:
        sidecar = sidecars[item.id]
        items.append({"id": item.id, "model": item.unit.model, "target": item.unit.text, "label": item.unit.target.label,
                      "seed": item.seed, "key": item.key, "clean_activation": sidecar["clean_activation"],
                      **dataset_numbers(item, markers.get(item.unit.path)), "concept": concept_numbers(item),
                      "sidecar": sidecar_path(item), "page": unit_file(item.unit, UNIT_PAGE), **sidecar["files"],
                      "attribution": attributions.get(item.unit.path, {}).get("files")})
    manifest = {"format": FORMAT, "title": spec.title, "description": spec.description, "updated": now(),
                "spec": {"name": spec.source, "sha256": spec.sha256, "text": spec.text or None},
                "models": [entry.identity() for entry in spec.models.values()],
                "versions": library_versions(), "items": items, "sheets": sheets}
    write_json(out / MANIFEST, manifest)
    return manifest


def lock(out: Path):
    """Hold an exclusive lock on ``out`` for this process (released by the OS even on SIGKILL), or ``None``
    when the platform has no ``fcntl``. Raises ``BlockingIOError`` when another run holds it."""
    try:
        import fcntl
    except ImportError:
        return None
    handle = open(out / LOCK, "a+")  # noqa: SIM115 - kept open for the whole run
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise
    return handle
