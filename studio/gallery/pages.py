"""The gallery's server-free HTML: ``index.html`` (every render with its top dataset-example crops and numbers)
and one page per unit beside its PNG (the renders large, every crop with its score and source file, the
heat maps). Unit pages hold no timestamp and are written only when their text changes, so a rerun that does
nothing rewrites nothing."""

from __future__ import annotations

import html
import posixpath
from pathlib import Path
from urllib.parse import quote

from studio.concepts.dictionary import load_dictionary
from studio.gallery.examples import summary
from studio.gallery.output import INDEX, MANIFEST, UNIT_PAGE, now, sheet_path, sidecar_path, unit_file
from studio.gallery.spec import GallerySpec, Item, Unit
from studio.io import write_text

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
h1{margin-bottom:.2em} .meta{color:#666;font-size:.9em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:14px}
figure{margin:0;padding:6px;border:1px solid #ddd;border-radius:6px;background:#fafafa}
figure img.unit{width:100%;image-rendering:auto;display:block}
figure.large{display:inline-block;margin:0 14px 14px 0} figure.large img.unit{width:384px;image-rendering:pixelated}
figure.flagged{border:3px solid #c00;background:#fff3f3} .flag{color:#c00;font-weight:bold}
figcaption{font-size:.82em;margin-top:4px;line-height:1.35}
.act,.numbers{color:#555} .heat,.crops{display:flex;flex-wrap:wrap;gap:3px;margin-top:4px} .heat img{width:32%}
.crops img{width:23%;image-rendering:pixelated}
.examples{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}
.examples img{width:100%;image-rendering:pixelated}
.sheets img{max-width:320px;border:1px solid #ddd;margin:4px}
code{font-size:.95em} a{color:#0645ad}
"""
e = html.escape


def _url(path: str, page: str) -> str:
    """``path`` (relative to the gallery folder) as a link from ``page`` (also relative to it)."""
    return e(quote(posixpath.relpath(path, posixpath.dirname(page) or ".")))


def _document(title: str, body: list[str]) -> str:
    return "\n".join([f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
                      f"<style>{_STYLE}</style></head><body>", *body, "</body></html>\n"])


def _write_html(path: Path, text: str) -> Path:
    """Write ``text`` atomically unless the file already holds it."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return path
    return write_text(path, text)


def _numbers(item: Item, marker: dict | None) -> tuple[str, bool]:
    """The render's line beside the dataset (marked when its path is flagged), or nothing without examples."""
    render = (marker or {}).get("renders", {}).get(item.id)
    if render is None:
        return "", False
    text, flagged = summary(render)
    flag = "<span class='flag'>⚠ </span>" if flagged else ""
    return f"<br><span class='numbers'>{flag}{e(text)}</span>", flagged


def _figure(item: Item, sidecar: dict, marker: dict | None, page: str, css: str, extras: str = "") -> str:
    """A render with its caption (target, seed, activation, numbers beside the dataset, links) and ``extras``;
    on the index its image links to the unit's page."""
    unit, files = item.unit, sidecar["files"]
    links = [f"<a href='{_url(sidecar_path(item), page)}'>provenance</a>"]
    if files.get("animation"):
        links.append(f"<a href='{_url(files['animation'], page)}'>animation</a>")
    shown = files.get("thumbnail", files["image"])
    image = f"<img class='unit' loading='lazy' src='{_url(shown, page)}' alt='{e(unit.text)}'>"
    if page != INDEX and "thumbnail" in files:  # a canvas: the page links its thumbnail to the full image
        image = f"<a href='{_url(files['image'], page)}'>{image}</a>"
    if page == INDEX:
        links.insert(0, f"<a href='{_url(unit_file(unit, UNIT_PAGE), page)}'>unit page</a>")
        image = f"<a href='{_url(unit_file(unit, UNIT_PAGE), page)}'>{image}</a>"
    label = f"<br>{e(unit.target.label)}" if unit.target.label else ""
    numbers, flagged = _numbers(item, marker)
    css = f"{css} flagged" if flagged else css
    return (f"<figure data-id='{e(item.id)}' class='{css.strip()}'>{image}<figcaption><code>{e(unit.text)}</code> "
            f"seed {item.seed}{label}<br><span class='act'>activation {sidecar['clean_activation']:.4g}</span>"
            f"{numbers}<br>{' · '.join(links)}</figcaption>{extras}</figure>")


def _heat(attribution: dict | None, page: str) -> str:
    if not attribution:
        return ""
    method = e(attribution["method"])
    return "<div class='heat'>" + "".join(
        f"<a href='{_url(path, page)}'><img loading='lazy' src='{_url(path, page)}' alt='{method}' "
        f"title='{method} on {e(photo)}'></a>" for photo, path in attribution["files"].items()) + "</div>"


def _thumbnails(marker: dict | None, page: str) -> str:
    """A unit's top crops as small thumbnails, each titled with its score and source file."""
    if not marker:
        return ""
    return "<div class='crops'>" + "".join(
        f"<img loading='lazy' src='{_url(crop['file'], page)}' alt='example {rank + 1}' "
        f"title='{crop['score']:.4g} · {e(Path(crop['source']).name)}'>"
        for rank, crop in enumerate(marker["examples"])) + "</div>"


def _sheet_links(sheets: list[str], page: str) -> str:
    return "".join(f"<a href='{_url(s, page)}'><img src='{_url(s, page)}' alt='{e(s)}'></a>" for s in sheets)


def write_index(out: Path, spec: GallerySpec, sidecars: dict[str, dict], attributions: dict[str, dict],
                markers: dict[str, dict], sheets: list[str]) -> Path:
    """A static ``index.html``: every render (caption, seed, activation, numbers beside the dataset, its top
    crops), its files, links to the unit pages, and the sheets."""
    parts = [f"<h1>{e(spec.title)}</h1>"]
    if spec.description:
        parts.append(f"<p>{e(spec.description)}</p>")
    models = ", ".join(f"{e(m.name)} (<code>{e(m.spec)}</code>, weights sha256 {m.weights_sha256[:12]})"
                       for m in spec.models.values())
    index = f" · examples from {e(spec.examples.index.name)}" if spec.examples.index else ""
    parts.append(f"<p class='meta'>{len(spec.items)} images of {len(spec.units)} units · {models} · "
                 f"spec {e(spec.source)}{index} · updated {now()} · <a href='{MANIFEST}'>manifest.json</a></p>")
    if sheets:
        parts.append(f"<h2>Contact sheets</h2><div class='sheets'>{_sheet_links(sheets, INDEX)}</div>")
    section = None
    for item in sorted(spec.items, key=lambda i: (i.unit.order, i.seed)):
        unit = item.unit
        if (unit.model, unit.layer_dir) != section:
            parts.append(("</div>" if section else "") + f"<h2>{e(unit.model)} · {e(unit.target.layer_name)}</h2>"
                         "<div class='grid'>")
            section = (unit.model, unit.layer_dir)
        marker = markers.get(unit.path)
        parts.append(_figure(item, sidecars[item.id], marker, INDEX, "render",
                             _thumbnails(marker, INDEX) + _heat(attributions.get(unit.path), INDEX)))
    parts.append("</div>" if section else "")
    return _write_html(out / INDEX, _document(spec.title, parts))


def _examples_section(marker: dict | None, page: str) -> str:
    """Every crop shown for the unit, large, with its rank, score, source file and box."""
    if not marker:
        return ""
    figures = "".join(
        f"<figure><img src='{_url(crop['file'], page)}' alt='example {rank + 1}'>"
        + (f"<img src='{_url(crop['map'], page)}' alt='the unit over example {rank + 1}'>" if crop.get("map") else "")
        + f"<figcaption>#{rank + 1} · score "
        f"{crop['score']:.4g}<br><span title='{e(crop['source'])}'>{e(Path(crop['source']).name)}</span><br>"
        f"box {' × '.join(f'{start}:{stop}' for start, stop in crop['box'])}</figcaption></figure>"
        for rank, crop in enumerate(marker["examples"]))
    index = marker["index"]
    return (f"<h2>Top dataset examples</h2><p class='meta'>{len(marker['examples'])} best of {index['images']} "
            f"images in {e(Path(index['path']).name)} (sha256 {index['sha256'][:12]})</p>"
            f"<div class='examples'>{figures}</div>")


def _concept(unit: Unit) -> str:
    """A concept's line (its frequency, its dictionary's R², L0 and dead concepts), or nothing for a channel."""
    target = unit.target
    if not target.concepts or target.channel is None:
        return ""
    return f"<br><span class='concept'>{e(load_dictionary(target.concepts).line(target.channel))}</span>"


def _unit_page(spec: GallerySpec, unit: Unit, sidecars: dict[str, dict], attribution: dict | None,
               marker: dict | None, sheets: list[str]) -> str:
    """One unit's page: its renders large with their numbers, its crops, heat maps and sheets, links back."""
    page = unit_file(unit, UNIT_PAGE)
    entry = spec.models[unit.model]
    label = f" {e(unit.target.label)}" if unit.target.label else ""
    parts = [f"<p><a href='{_url(INDEX, page)}'>← {e(spec.title)}</a> · "
             f"<a href='{_url(MANIFEST, page)}'>manifest.json</a></p>",
             f"<h1><code>{e(unit.text)}</code>{label}</h1><p class='meta'>model {e(entry.name)} "
             f"(<code>{e(entry.spec)}</code>) · layer {e(unit.target.layer_name)}{_concept(unit)}</p>"]
    parts += [_figure(item, sidecars[item.id], marker, page, "large")
              for item in sorted(spec.items, key=lambda i: i.seed) if item.unit == unit]
    parts.append(_examples_section(marker, page))
    if attribution:
        parts.append(f"<h2>{e(attribution['method'])}</h2>{_heat(attribution, page)}")
    if sheets:
        parts.append(f"<h2>Contact sheets</h2><div class='sheets'>{_sheet_links(sheets, page)}</div>")
    return _document(f"{unit.text} · {spec.title}", parts)


def write_unit_pages(out: Path, spec: GallerySpec, sidecars: dict[str, dict], attributions: dict[str, dict],
                     markers: dict[str, dict], sheets: list[str]) -> None:
    """The page of every unit, beside its PNG and linked from the index."""
    for unit in spec.units:
        own = {sheet_path(unit.model, unit.layer_dir, kind) for kind in ("", "examples")}
        layer_sheets = [s for s in sheets if s in own]
        text = _unit_page(spec, unit, sidecars, attributions.get(unit.path), markers.get(unit.path), layer_sheets)
        _write_html(out / unit_file(unit, UNIT_PAGE), text)
