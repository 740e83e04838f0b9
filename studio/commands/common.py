"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse

from studio.models import DEFAULT_MODEL, StudioModel, load_model


def register(subparsers) -> None:
    """Not a subcommand: this module only holds shared helpers."""


def add_model_arguments(parser: argparse.ArgumentParser, optional: bool = False) -> None:
    """``MODEL`` (positional; when ``optional``, defaults to the embedded model), ``--random-weights``, ``--device``."""
    parser.add_argument("model", nargs="?" if optional else None, default=DEFAULT_MODEL,
                            help="efficientnet_lite0 (default), torchvision:NAME, timm:NAME, file.py:factory or model.pt")
    parser.add_argument("--random-weights", action="store_true", help="do not load pretrained weights")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA when present)")


def model_from_args(args: argparse.Namespace) -> StudioModel:
    """Load the model the arguments name."""
    return load_model(args.model, pretrained=not args.random_weights, device=args.device)
