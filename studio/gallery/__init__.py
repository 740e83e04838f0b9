"""Galleries: render a TOML spec of models, targets and settings to PNGs with provenance, resumably.

    from studio import gallery
    report = gallery.run("gallery/example.toml", "out/example")   # or: studio gallery SPEC.toml --out DIR

``spec`` validates and expands a spec (``validation`` locates mistakes, ``loading`` loads its models and
photos), ``runner`` renders it in batches and ``output`` writes every file atomically, the sidecar last.
"""

from studio.gallery.runner import GalleryReport, Plan, plan, run
from studio.gallery.spec import GallerySpec, load_spec

__all__ = ["GalleryReport", "GallerySpec", "Plan", "load_spec", "plan", "run"]
