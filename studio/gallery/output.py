"""Gallery files: per-image PNG + animation + provenance sidecar, attribution overlays, contact sheets,
``manifest.json`` and a server-free ``index.html``. Every file is written atomically (temp file + rename);
an image's sidecar JSON is written last, so its presence (with a matching key) means the image is complete.
"""

from __future__ import annotations

import hashlib
import html
import json
import platform
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import imageio.v3 as iio
import numpy as np
import torch

from studio.gallery.spec import GallerySpec, Item, OutputOptions, Unit
from studio.io import atomic_write, is_rgb_image, to_uint8, write_json, write_stack
from studio.targets import safe_name

MANIFEST = "manifest.json"
INDEX = "index.html"
LOCK = ".lock"
FORMAT = "feature-studio-gallery/1"
#: Smallest contact-sheet tile (pixels) when [output] tile is not set: smaller renders are upscaled.
MIN_TILE = 96
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


def sidecar_path(item: Item) -> str:
    return f"{item.unit.path}_s{item.seed}.json"


def animation_path(item: Item, kind: str) -> str:
    return f"{item.unit.path}_s{item.seed}.{kind}"


def attribution_marker(unit: Unit) -> str:
    return f"{unit.path}.attribution.json"


def overlay_path(unit: Unit, method: str, index: int, photo: Path) -> str:
    return f"{unit.path}.{safe_name(method)}.{index:02d}_{safe_name(photo.stem)}.png"


def sheet_path(model: str, layer_dir: str) -> str:
    return f"sheets/{model}__{layer_dir}.png"


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
    if not sidecar or sidecar.get("key") != item.key or not _intact(out, sidecar):
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
    atomic_write(out / files["image"], lambda tmp: iio.imwrite(tmp, to_uint8(image), extension=".png"))
    if not is_rgb_image(image):  # the PNG is a preview (projection, composite): keep the data beside it
        files["data"] = image_path(item).removesuffix(".png") + ".tif"
        write_stack(out / files["data"], image)
    if frames:
        files["animation"] = animation_path(item, output.animation)
        write_animation(out / files["animation"], frames, output.fps)
    sidecar = {**record, "files": files, "sha256": {name: file_digest(out / path) for name, path in files.items()}}
    write_json(out / sidecar_path(item), sidecar)
    return sidecar


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes: what the sidecar promises, so a truncated or altered file is found."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _intact(out: Path, sidecar: dict) -> bool:
    """Every file the sidecar lists exists with the bytes it recorded (a file cut short by a full disk or a
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


def write_sheets(out: Path, spec: GallerySpec) -> list[str]:
    """One contact sheet per model and layer, tiles in spec order (seeds side by side); returns their paths."""
    layers: dict[tuple[str, str], list[Item]] = {}
    for item in spec.items:
        layers.setdefault((item.unit.model, item.unit.layer_dir), []).append(item)
    written = []
    for (model, layer_dir), items in layers.items():
        items = sorted(items, key=lambda i: (i.unit.order, i.seed))
        several = len({i.seed for i in items}) > 1
        tiles = [iio.imread(out / image_path(i))[..., :3] for i in items]
        layer = items[0].unit.target.layer_name
        settings = {i.settings for i in items}
        first = items[0].settings
        detail = f"{first.param} {first.size}px, {first.steps} steps" if len(settings) == 1 else "mixed settings"
        title = f"{model} · {layer} · {detail}"
        sheet = contact_sheet(tiles, [tile_label(i, several) for i in items] if spec.output.labels else None,
                              spec.output.columns, spec.output.tile, title)
        relative = sheet_path(model, layer_dir)
        dpi = spec.output.dpi
        atomic_write(out / relative, lambda tmp: iio.imwrite(tmp, sheet, extension=".png", dpi=(dpi, dpi)))
        written.append(relative)
    return written


# ---------------------------------------------------------------------------------------------- manifest, index

def write_manifest(out: Path, spec: GallerySpec, sidecars: dict[str, dict], attributions: dict[str, dict],
                   sheets: list[str]) -> dict:
    """``manifest.json``: the spec (its text too), models, every item with its files and activation, sheets."""
    items = []
    for item in spec.items:
        sidecar = sidecars[item.id]
        items.append({"id": item.id, "model": item.unit.model, "target": item.unit.text, "label": item.unit.target.label,
                      "seed": item.seed, "key": item.key, "clean_activation": sidecar["clean_activation"],
                      "sidecar": sidecar_path(item), **sidecar["files"],
                      "attribution": attributions.get(item.unit.path, {}).get("files")})
    manifest = {"format": FORMAT, "title": spec.title, "description": spec.description, "updated": now(),
                "spec": {"name": spec.source, "sha256": spec.sha256, "text": spec.text or None},
                "models": [entry.identity() for entry in spec.models.values()],
                "versions": library_versions(), "items": items, "sheets": sheets}
    write_json(out / MANIFEST, manifest)
    return manifest


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
h1{margin-bottom:.2em} .meta{color:#666;font-size:.9em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:14px}
figure{margin:0;padding:6px;border:1px solid #ddd;border-radius:6px;background:#fafafa}
figure img.unit{width:100%;image-rendering:auto;display:block}
figcaption{font-size:.82em;margin-top:4px;line-height:1.35}
.act{color:#555} .heat{display:flex;gap:3px;margin-top:4px} .heat img{width:32%}
.sheets img{max-width:320px;border:1px solid #ddd;margin:4px}
code{font-size:.95em} a{color:#0645ad}
"""


def _url(path: str) -> str:
    return html.escape(quote(path))


def write_index(out: Path, spec: GallerySpec, sidecars: dict[str, dict], attributions: dict[str, dict],
                sheets: list[str]) -> Path:
    """A static ``index.html`` with every item (caption, seed, clean activation), its files and the sheets."""
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(spec.title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{e(spec.title)}</h1>"]
    if spec.description:
        parts.append(f"<p>{e(spec.description)}</p>")
    models = ", ".join(f"{e(m.name)} (<code>{e(m.spec)}</code>, weights sha256 {m.weights_sha256[:12]})"
                       for m in spec.models.values())
    parts.append(f"<p class='meta'>{len(spec.items)} images of {len(spec.units)} units · {models} · "
                 f"spec {e(spec.source)} · updated {now()} · <a href='{MANIFEST}'>manifest.json</a></p>")
    if sheets:
        parts.append("<h2>Contact sheets</h2><div class='sheets'>"
                     + "".join(f"<a href='{_url(s)}'><img src='{_url(s)}' alt='{e(s)}'></a>" for s in sheets) + "</div>")
    section = None
    for item in sorted(spec.items, key=lambda i: (i.unit.order, i.seed)):
        unit, sidecar = item.unit, sidecars[item.id]
        heading = (unit.model, unit.layer_dir)
        if heading != section:
            parts.append(("</div>" if section else "") + f"<h2>{e(unit.model)} · {e(unit.target.layer_name)}</h2>"
                         "<div class='grid'>")
            section = heading
        files = sidecar["files"]
        links = [f"<a href='{_url(sidecar_path(item))}'>provenance</a>"]
        if files.get("animation"):
            links.append(f"<a href='{_url(files['animation'])}'>animation</a>")
        label = f"<br>{e(unit.target.label)}" if unit.target.label else ""
        heat = ""
        attribution = attributions.get(unit.path)
        if attribution:
            method = e(attribution["method"])
            heat = "<div class='heat'>" + "".join(
                f"<a href='{_url(path)}'><img loading='lazy' src='{_url(path)}' alt='{method}' title='{method} on {e(photo)}'></a>"
                for photo, path in attribution["files"].items()) + "</div>"
        parts.append(f"<figure data-id='{e(item.id)}'><img class='unit' loading='lazy' src='{_url(files['image'])}' alt='{e(unit.text)}'>"
                     f"<figcaption><code>{e(unit.text)}</code> seed {item.seed}{label}<br>"
                     f"<span class='act'>activation {sidecar['clean_activation']:.4g}</span> · {' · '.join(links)}"
                     f"</figcaption>{heat}</figure>")
    parts.append(("</div>" if section else "") + "</body></html>\n")
    text = "\n".join(parts)
    return atomic_write(out / INDEX, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


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
