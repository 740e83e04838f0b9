"""studio blocks: the channels of a layer behind a decision on a photo, their maps and their renders.

    studio blocks [MODEL] PHOTO --layer blocks.5 [--target "Egyptian cat"] [--top 6] --out blocks.png
    studio blocks [MODEL] PHOTO --layer blocks.5 --examples examples.sqlite --out blocks.png   # with dataset examples

Channels are ranked by activation x gradient of the target's score summed over the layer's positions (the
score's first-order drop when the channel is zeroed); the command then zeroes them for real, and as many random
channels, and prints both scores. The figure shows the photo, each channel's map over it, its render and (with
--examples) its top dataset example.
"""

from __future__ import annotations

import argparse

from studio.building_blocks import blocks, blocks_figure, random_control
from studio.checks import check_number
from studio.commands.common import add_photo_arguments, add_weight_arguments, photo_and_model, render_settings_from_args
from studio.exemplars import check_index, examples, index_info
from studio.io import write_figure
from studio.models import MODEL_HELP


def register(subparsers) -> None:
    parser = subparsers.add_parser("blocks", help="the channels of a layer behind a decision on a photo",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("positionals", nargs="+", metavar="[MODEL] PHOTO", help=f"the model ({MODEL_HELP}), a photo")
    add_weight_arguments(parser)
    parser.add_argument("--layer", required=True, help="the layer whose channels are ranked, e.g. blocks.5")
    parser.add_argument("--target", default=None,
                        help="class index or label, or a unit of a later layer (default: the photo's top-1 class)")
    parser.add_argument("--top", type=int, default=6, help="channels shown (default: 6)")
    parser.add_argument("--examples", default=None, metavar="INDEX.sqlite",
                        help="a dataset-example index of the layer (studio index): each channel's top example")
    parser.add_argument("--no-render", dest="render", action="store_false", help="maps only, no renders")
    parser.add_argument("--draws", type=int, default=8, help="random channel sets zeroed as the control (default: 8)")
    add_photo_arguments(parser, "seed of the first render and of the random control", "the figure, e.g. blocks.png")
    parser.set_defaults(run=run)


def run(args) -> int:
    settings = render_settings_from_args(args)
    check_number("--draws", args.draws, int, minimum=1, maximum=1000)
    if args.examples is not None:
        index_info(args.examples)  # not an index: one sentence before the model loads
    model, photo, rest = photo_and_model(args, [], "studio blocks cat.jpg --layer blocks.5 --out blocks.png",
                                         suffixes=(".png",))
    if args.examples is not None:
        check_index(args.examples, model)
    result = blocks(model, photo, args.layer, args.target, top=args.top,
                    render_channels=args.render, settings=settings, seed=args.seed, progress=args.render)
    control = random_control(model, photo, result, args.draws, args.seed)
    crops = None
    if args.examples is not None:
        tops = [examples(args.examples, unit, model) for unit in result.units]
        crops = [found[0].crop() if found else None for found in tops]
    print(f"{result.target.description}: score {result.score:.4g} on {rest[0]}")
    print(f"{'rank':>4}  {'unit':<16} {'attribution':>11} {'share':>6} {'mean act.':>9}  render" +
          (" (its activation there)" if result.renders is not None else ""))
    values = result.renders.clean_values.tolist() if result.renders is not None else [None] * len(result.channels)
    for rank, (unit, attribution, share, mean, direction, value) in enumerate(
            zip(result.units, result.attributions, result.shares, result.activations, result.directions, values), 1):
        way = "raises" if direction > 0 else "lowers"
        print(f"{rank:>4}  {unit:<16} {attribution:>11.4g} {100 * share:>5.1f}% {mean:>9.3g}  {way}" +
              (f" ({direction * value:.4g})" if value is not None else ""))
    chosen, drawn = control
    print(f"zeroing these {len(result.channels)} channels: score {result.score:.4g} -> {chosen:.4g}; "
          f"{len(result.channels)} random channels: {drawn.mean():.4g} (mean of {len(drawn)}, lowest {drawn.min():.4g})")
    print(f"wrote {write_figure(args.out, blocks_figure(photo, result, crops, control))}")
    return 0
