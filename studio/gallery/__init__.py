"""Galleries: render a TOML spec of models, targets and settings to PNGs with provenance, resumably.

    from studio import gallery
    report = gallery.run("gallery/example.toml", "out/example")   # or: studio gallery SPEC.toml --out DIR

``spec`` validates and expands a spec (``validation`` locates mistakes, ``loading`` loads its models, photos
and dataset-example index), ``runner`` renders it in batches, ``examples`` puts each unit's top dataset crops
and numbers beside its renders, ``output`` writes every file atomically, the sidecar last, and ``pages`` writes
``index.html`` and a page per unit.
"""

from studio.gallery.runner import GalleryReport, Plan, plan, run
from studio.gallery.spec import GallerySpec, load_spec

__all__ = ["GalleryReport", "GallerySpec", "Plan", "load_spec", "plan", "run"]
