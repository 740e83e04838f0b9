"""Arguments shared by several subcommands: the model, and the render settings (derived from
:class:`studio.settings.RenderSettings`, so every setting is an option with its own help and choices)."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence

import torch

from studio.errors import StudioError
from studio.models import DEFAULT_MODEL, EMBEDDED, MODEL_HELP, StudioModel, load_model, model_kind, parse_input
from studio.settings import RenderSettings, setting_fields


def register(subparsers) -> None:
    """Not a subcommand: this module only holds shared helpers."""


def add_model_arguments(parser: argparse.ArgumentParser, optional: bool = False) -> None:
    """``MODEL`` (positional; when ``optional``, defaults to the embedded model), ``--random-weights``, ``--device``.
    Commands whose model is followed by other positionals take it through :func:`split_model` instead."""
    if optional:
        parser.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=MODEL_HELP)
    add_weight_arguments(parser)


def add_weight_arguments(parser: argparse.ArgumentParser) -> None:
    """``--random-weights``, ``--device`` and the input spec (``--input``, ``--mean``, ``--std``)."""
    parser.add_argument("--random-weights", action="store_true", help="do not load pretrained weights")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA when present)")
    parser.add_argument("--input", default=None, metavar="CxHxW",
                        help="the model's input: channels then 2 or 3 sizes, e.g. 1x32x32x32 for a 1-channel volume "
                             "(default: from the model's config or its first convolution)")
    parser.add_argument("--mean", default=None, help="input mean per channel, comma-separated (one value: all)")
    parser.add_argument("--std", default=None, help="input std per channel, comma-separated (one value: all)")


def folder_parser(subparsers, name: str, summary: str, doc: str, ray: bool = False) -> argparse.ArgumentParser:
    """A subcommand that reads a folder of images through a model (``studio index``, ``studio concepts``):
    ``[MODEL] FOLDER`` positionals, the model's weight and input options, and ``--workers`` (with ``ray``, also
    ``--ray [ADDRESS]``, whose workers then decode)."""
    parser = subparsers.add_parser(name, help=summary, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("positionals", nargs="*", metavar="[MODEL] FOLDER",
                        help=f"the model ({MODEL_HELP}) and a folder of images (recursive: JPEG, PNG, TIFF)")
    add_weight_arguments(parser)
    help = "decoding processes; 0 decodes in this one (default: 2)"
    if ray:
        add_ray_argument(parser, "read the folder on Ray workers")
        help += "; with --ray, Ray workers (default: one per GPU, else as many as the CPUs hold)"
    parser.add_argument("--workers", type=int, default=None if ray else 2, help=help)
    return parser


def add_ray_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--ray [ADDRESS]``: alone, a Ray started on this machine; with an address, a running cluster."""
    parser.add_argument("--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
                        help=f"{what}: alone, a Ray started on this machine; with ADDRESS (host:port), a running "
                             "cluster (needs pip install 'feature-studio[ray]')")


def model_and_folder(args: argparse.Namespace, needed: Sequence[str], example: str) -> tuple[StudioModel, str]:
    """The model and the one folder of :func:`folder_parser`, once the ``needed`` options are given;
    otherwise one sentence ending in ``example``."""
    args.model, rest = split_model(args.positionals)
    if len(rest) == 2:
        raise maybe_a_model(StudioError(f"Give one folder, not {rest[0]!r} and {rest[1]!r}."), rest[0], args.model)
    if len(rest) != 1 or not all(getattr(args, name) for name in needed):
        flags = ["one FOLDER", *(f"--{name}" for name in needed)]
        raise StudioError(f"Give {', '.join(flags[:-1])} and {flags[-1]}, e.g. {example}.")
    return model_from_args(args), rest[0]


def split_model(positionals: Sequence[str]) -> tuple[str, list[str]]:
    """``[MODEL] REST...``: the model when the first argument names one, else the embedded default."""
    if positionals and model_kind(positionals[0]) is not None:
        return positionals[0], list(positionals[1:])
    return DEFAULT_MODEL, list(positionals)


def maybe_a_model(error: StudioError, first: str, model: str) -> StudioError:
    """``error`` about the first positional, with a hint when it was probably meant as a model name."""
    if model != DEFAULT_MODEL or model_kind(first) is not None:
        return error
    close = difflib.get_close_matches(first, list(EMBEDDED), n=1, cutoff=0.8)
    if close:
        return StudioError(f"Unknown model {first!r}: did you mean {close[0]!r}?")
    if ":" in first:  # a target of the default model after all: its own error says what is wrong
        return error
    return StudioError(f"{str(error).rstrip('.?')}; if {first!r} is a model, name it torchvision:{first}, "
                       f"timm:{first} or a file ({MODEL_HELP}).")


def model_from_args(args: argparse.Namespace) -> StudioModel:
    """Load the model the arguments name, with the input spec they give."""
    if args.input is None and (args.mean is not None or args.std is not None):
        raise StudioError("--mean and --std go with --input, e.g. --input 1x32x32x32 --mean 0 --std 1.")
    spec = None if args.input is None else parse_input(args.input, args.mean, args.std)
    return load_model(args.model, pretrained=not args.random_weights, device=args.device, input=spec)


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per render setting (``--steps``, ``--param``, ``--decay-power``, ``--no-decorrelate`` ...)."""
    group = parser.add_argument_group("render settings")
    for spec in setting_fields():
        flag = f"--{spec.name.replace('_', '-')}"
        helptext = f"{spec.help} (default: {spec.default})"
        if spec.kind is bool:
            group.add_argument(flag, dest=spec.name, action=argparse.BooleanOptionalAction, default=None, help=helptext)
        else:
            group.add_argument(flag, dest=spec.name, type=spec.kind, choices=spec.choices, default=None,
                               help=helptext, metavar=None if spec.choices else spec.name.upper())


def render_settings_from_args(args: argparse.Namespace) -> RenderSettings:
    """The settings the options name; options left out keep their defaults."""
    given = {spec.name: getattr(args, spec.name) for spec in setting_fields() if getattr(args, spec.name) is not None}
    return RenderSettings().updated(given)


def add_photo_arguments(parser: argparse.ArgumentParser, seed: str, out: str) -> None:
    """What every command on one photo that renders takes besides its own options: ``--seed`` (its help
    ``seed``), a required ``--out`` (its help ``out``) and the render settings; :func:`photo_and_model` checks them."""
    parser.add_argument("--seed", type=int, default=0, help=seed)
    parser.add_argument("--out", required=True, help=out)
    add_render_arguments(parser)


def photo_and_model(args: argparse.Namespace, extra: Sequence[str], usage: str,
                    suffixes: Sequence[str] = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")
                    ) -> tuple[StudioModel, torch.Tensor, list[str]]:
    """For a command on one photo (``[MODEL] PHOTO``, then positionals named by ``extra``, such as ``("a
    target",)``; ``--out`` and ``--seed``): the checks before any work, then the model, the photo as it takes
    it, and the positionals; a wrong count, or an ``--out`` not ending in one of ``suffixes``, is one sentence.
    """
    from studio.checks import check_seed, output_file
    from studio.io import read_input

    args.model, rest = split_model(args.positionals)
    if len(rest) != 1 + len(extra):
        raise StudioError(f"Give {' and '.join(['a photo', *extra])} after the model, e.g. {usage} (got "
                          f"{len(rest)} arguments).")
    output_file(args.out)
    if not args.out.lower().endswith(tuple(suffixes)):
        raise StudioError(f"--out {args.out!r} must end in {', '.join(suffixes)}.")
    check_seed(args.seed, "--seed")
    model = model_from_args(args)
    try:
        photo = read_input(rest[0], model.spec.channels, model.spec.dims)
    except StudioError as error:
        raise maybe_a_model(error, rest[0], args.model) from None
    return model, photo.to(model.device), rest
