"""studio concepts: learn a concept dictionary (a sparse autoencoder or NMF) of one layer from a folder of
images, or show what a dictionary holds. Its concepts are then targets like channels: blocks5.concepts:17.

    studio concepts [MODEL] FOLDER --layer blocks.5 --out blocks5.concepts [--method topk] [--concepts 512]
    studio concepts --show blocks5.concepts      # the model, layer, source, quality and the most frequent concepts

Needs the optional extra: pip install 'feature-studio[concepts]' (Overcomplete).
"""

from __future__ import annotations

from studio.checks import check_number, check_seed
from studio.commands.common import folder_parser, model_and_folder
from studio.concepts.dictionary import METHODS, load_dictionary
from studio.concepts.learn import learn_concepts
from studio.errors import StudioError


def register(subparsers) -> None:
    parser = folder_parser(subparsers, "concepts", "learn a concept dictionary (SAE, NMF) of a layer, or show one", __doc__)
    parser.add_argument("--layer", help="the layer to learn concepts of, e.g. blocks.5 (`studio layers` lists them)")
    parser.add_argument("--out", help="the dictionary file to write, ending in .concepts, e.g. blocks5.concepts")
    parser.add_argument("--method", default="topk", choices=METHODS,
                        help="topk: TopK SAE (default); batchtopk: BatchTopK SAE; nmf: non-negative factorisation")
    parser.add_argument("--concepts", type=int, default=512, help="atoms in the dictionary (default: 512)")
    parser.add_argument("--top-k", type=int, default=None, help="concepts active per position (default: concepts/16)")
    parser.add_argument("--samples", type=int, default=100_000,
                        help="positions kept, spread evenly over the images (default: 100000, fewer if memory is short)")
    parser.add_argument("--epochs", type=int, default=None, help="passes over the samples (default: 3000 steps' worth)")
    parser.add_argument("--batch", type=int, default=1024, help="samples per training step (default: 1024)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 0.001)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling and initialisation (default: 0)")
    parser.add_argument("--image-batch", type=int, default=32, help="images per forward pass (default: 32)")
    parser.add_argument("--show", metavar="DICTIONARY", help="print what a dictionary file holds (no MODEL FOLDER)")
    parser.set_defaults(run=run)


def run(args) -> int:
    if args.show:
        if args.positionals:
            raise StudioError("--show takes only a dictionary file, e.g. studio concepts --show blocks5.concepts.")
        return show(args.show)
    check_seed(args.seed, "--seed")
    check_number("--lr", args.lr, minimum=0, maximum=10, positive=True)
    model, folder = model_and_folder(args, ("layer", "out"), "studio concepts photos/ --layer blocks.5 --out blocks5.concepts")
    dictionary = learn_concepts(model, folder, args.layer, args.out, method=args.method,
                                concepts=args.concepts, top_k=args.top_k, max_samples=args.samples,
                                epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed,
                                image_batch=args.image_batch, workers=args.workers)
    print(f"{dictionary.path}: {dictionary.describe()}; learned in {dictionary.record['seconds']:.1f} s")
    return 0


def show(path: str, count: int = 10) -> int:
    """Print a dictionary's record, quality and its most frequent concepts."""
    dictionary = load_dictionary(path)
    record, source = dictionary.record, dictionary.record.get("source", {})
    print(f"{dictionary.path}: {dictionary.describe()}")
    print(f"  model {record.get('model')} at {record.get('input')}, weights sha256 {str(record.get('weights'))[:12]}")
    print(f"  learned from {source.get('samples')} positions of {source.get('images')} images in "
          f"{source.get('folder')} (sha256 {str(source.get('sha256'))[:12]}), in {record.get('seconds')} s")
    if dictionary.frequency is not None:
        order = dictionary.frequency.argsort(descending=True)[:count].tolist()
        listed = ", ".join(f"{index} ({dictionary.frequency[index]:.1%})" for index in order)
        print(f"  most frequent: {listed}")
    return 0
