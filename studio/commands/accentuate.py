"""studio accentuate: what in a photo a unit responds to (feature accentuation, Hamblin et al. 2024).

    studio accentuate [MODEL] PHOTO TARGET [--weight 50] [--layer blocks.1] --out accentuated.png

The render starts from the photo and maximises the unit while a penalty keeps it close to the photo in an early
layer's features; the command prints the unit on the photo and on the render, and the render's distance to the
photo in pixels and in those features.
"""

from __future__ import annotations

import argparse

from studio.accentuation import accentuate
from studio.commands.common import add_photo_arguments, add_weight_arguments, photo_and_model, render_settings_from_args
from studio.io import write_image
from studio.models import MODEL_HELP


def register(subparsers) -> None:
    parser = subparsers.add_parser("accentuate", help="accentuate a unit in a photo (start from it, stay close)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("positionals", nargs="+", metavar="[MODEL] PHOTO TARGET",
                        help=f"the model ({MODEL_HELP}), a photo and one unit such as blocks.4:3")
    add_weight_arguments(parser)
    parser.add_argument("--weight", type=float, default=50.0,
                        help="weight of the early-feature penalty (default: 50; 0 lets the render run free)")
    parser.add_argument("--layer", default=None, help="the early layer of the penalty (default: a sixth of the way in)")
    add_photo_arguments(parser, "seed of the random transforms", "the accentuated image, e.g. accentuated.png")
    parser.set_defaults(run=run)


def run(args) -> int:
    settings = render_settings_from_args(args)
    model, photo, rest = photo_and_model(args, ["a target"], "studio accentuate cat.jpg blocks.4:3 --out cat-accentuated.png")
    found = accentuate(model, photo, rest[1], layer=args.layer, weight=args.weight,
                       settings=settings, seed=args.seed, progress=True)
    gain = f"{found.gain:.3g} times" if found.photo_value > 0 else "the photo's value is not positive"
    print(f"{rest[1]}: {found.photo_value:.4g} on the photo, {found.value:.4g} accentuated ({gain}); "
          f"distance to the photo: {found.pixel_distance:.3f} RMS in pixels, {found.feature_distance:.3f} in "
          f"{found.layer}'s features")
    print(f"wrote {write_image(args.out, found.result.images[0])}")
    return 0
