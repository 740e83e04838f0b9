"""studio index: build a dataset-example index of a folder, or show what one holds.

    studio index [MODEL] FOLDER --layers blocks.4,blocks.5 --out examples.sqlite [--top-k 16] [--batch 32] [--workers 2]
    studio index [MODEL] FOLDER --layers ... --out ... --ray [ADDRESS] [--workers N]   # on Ray workers
    studio index --show examples.sqlite                 # the model, layers and image counts
    studio index --show examples.sqlite blocks.4:12     # a channel's statistics and top images with their crop boxes

A rerun of the same command resumes a killed run and adds the images new to the folder.
"""

from __future__ import annotations

from studio.commands.common import folder_parser, model_and_folder
from studio.errors import StudioError
from studio.exemplars import build_index, examples, index_info, unit_statistics


def register(subparsers) -> None:
    parser = folder_parser(subparsers, "index", "index the top-activating images of a folder for each channel", __doc__,
                           ray=True)
    parser.add_argument("--layers", help="comma-separated whole layers to index, e.g. blocks.4,blocks.5,logits")
    parser.add_argument("--out", help="the index file to write or extend, e.g. examples.sqlite")
    parser.add_argument("--top-k", type=int, default=16, help="images kept per channel (default: 16)")
    parser.add_argument("--batch", type=int, default=32, help="images per batch and per transaction (default: 32)")
    parser.add_argument("--show", nargs="+", metavar=("INDEX", "TARGET"),
                        help="print what an index holds, or a channel's statistics and top images (no MODEL FOLDER)")
    parser.set_defaults(run=run)


def run(args) -> int:
    if args.show:
        if len(args.show) > 2 or args.positionals:
            raise StudioError("--show takes an index and at most one target, e.g. --show examples.sqlite blocks.4:12.")
        return show(*args.show)
    model, folder = model_and_folder(args, ("layers", "out"), "studio index photos/ --layers blocks.4 --out examples.sqlite")
    info = build_index(model, folder, args.layers, args.out, top_k=args.top_k, batch=args.batch, workers=args.workers,
                       ray=args.ray)
    print(f"{info.path}: {info.images} images seen, {info.unreadable} unreadable")
    return 0


def show(index: str, target: str | None = None) -> int:
    """Print an index's summary, or one channel's statistics and top images."""
    info = index_info(index)
    if target is None:
        print(f"{info.path}: {info.model} at {info.input}, top {info.top_k} per channel, {info.images} images seen "
              f"({info.unreadable} unreadable)")
        for name, channels in info.layers.items():
            print(f"  {name:30s} {channels} channels")
        return 0
    stats = unit_statistics(index, target)
    quantiles = ", ".join(f"q{q:g} {value:.4g}" for q, value in stats.quantiles.items())
    print(f"{target}: {stats.images} images, mean {stats.mean:.4g}, max {stats.max:.4g}, "
          f"largest image mean {stats.max_mean:.4g}; spatial maxima {quantiles}")
    for rank, example in enumerate(examples(index, target), 1):
        box = " x ".join(f"{start}:{stop}" for start, stop in example.box)
        at = ",".join(map(str, example.position)) or "-"
        print(f"  {rank:3d}  {example.score:10.4g}  @{at:7s} box {box:20s} {example.path}")
    return 0
