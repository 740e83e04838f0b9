"""The napari studio (needs the ``viewer`` extra: ``pip install 'feature-studio[viewer]'``).

Importing this package imports neither napari nor Qt; ``StudioWidget`` is loaded on first use. Modules:
``streaming`` (the Qt-free core: fields, render requests, the worker's generator, attribution jobs, dataset
example montages and numbers), ``fields`` (magicgui fields built from setting descriptions), ``layers`` (images
as napari layers: RGB, grey, one per channel, volumes), ``render_panel`` and ``attribution_panel``
(the two halves of the dock widget), ``examples_panel`` (the model section's dataset-example index and what it
adds to each render), ``widget`` (the model section and both panels), ``app`` (``studio view``).
``napari.yaml`` beside this file is the npe2 manifest (Plugins → Feature Studio).
"""

from __future__ import annotations

__all__ = ["StudioWidget"]


def __getattr__(name: str):
    if name == "StudioWidget":
        from studio.viewer.widget import StudioWidget

        return StudioWidget
    raise AttributeError(f"module 'studio.viewer' has no attribute {name!r}")
