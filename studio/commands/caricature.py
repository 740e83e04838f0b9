"""studio caricature: what a layer sees in a photo (Lucid's caricature).

    studio caricature [MODEL] PHOTO --layer blocks.4 --out caricature.png

The render maximises ``dot(a, p) * cos(a, p) ** cossim_pow`` between its activations at the layer and the
photo's, through the usual random transforms; the command prints how close (cosine) the render's activations
came to the photo's, beside those of noise.
"""

from __future__ import annotations

import argparse

import torch

from studio.commands.common import add_photo_arguments, add_weight_arguments, photo_and_model, render_settings_from_args
from studio.engine import render
from studio.io import write_image
from studio.models import MODEL_HELP, resize_to_input
from studio.objectives import caricature
from studio.targets import activations, layer_info, layer_key


def register(subparsers) -> None:
    parser = subparsers.add_parser("caricature", help="what a layer sees in a photo (Lucid's caricature)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("positionals", nargs="+", metavar="[MODEL] PHOTO", help=f"the model ({MODEL_HELP}), a photo")
    add_weight_arguments(parser)
    parser.add_argument("--layer", required=True, help="the layer whose view of the photo is rendered, e.g. blocks.4")
    parser.add_argument("--cossim-pow", type=float, default=2.0,
                        help="power of the cosine that weights the dot product (default: 2; 0: the plain dot product)")
    add_photo_arguments(parser, "seed of the random transforms", "the caricature, e.g. caricature.png")
    parser.set_defaults(run=run)


def cosine_to_photo(model, layer: str, photo: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Cosine ``[B]`` between each image's activations at ``layer`` and the photo's (the whole layer flattened)."""
    key = layer_key(model, layer)
    with torch.no_grad():
        both = torch.cat([resize_to_input(x.to(model.device), model.spec) for x in (photo[None], images)])
        inputs = model.spec.normalise(both)
        acts = activations(model, inputs, [key])[key].float().flatten(1)
    return torch.nn.functional.cosine_similarity(acts[1:], acts[:1]).cpu()


def run(args) -> int:
    settings = render_settings_from_args(args)
    model, photo, rest = photo_and_model(args, [], "studio caricature cat.jpg --layer blocks.4 --out caricature.png")
    key = layer_key(model, args.layer)
    layer_info(model, key)  # an unknown layer: one sentence before the render
    result = render(model, caricature(photo, key, args.cossim_pow), settings, seed=args.seed, progress=True)
    noise = torch.rand((1, *result.images.shape[1:]), generator=torch.Generator().manual_seed(args.seed))
    closeness = cosine_to_photo(model, key, photo, torch.cat([result.images, noise]))
    print(f"caricature of {rest[0]} at {args.layer}: cosine to the photo's activations {closeness[0]:.3f} "
          f"(noise: {closeness[1]:.3f})")
    print(f"wrote {write_image(args.out, result.images[0])}")
    return 0
