"""studio evaluate: score several attribution methods' heat maps on photos by several faithfulness metrics.

    studio evaluate [MODEL] PHOTO... --methods saliency,gradcam,rise --out report/
    studio evaluate [MODEL] PHOTO... --metrics deletion,insertion,pointing --boxes boxes.json --out report/

Writes report/metrics.csv and report/metrics.json (one row per photo and method), report/curves.png and
report/table.png (method x metric means). Each finished row is kept in report/rows.jsonl, so a rerun of the same
command resumes a killed run, and a rerun with other settings is refused rather than mixed in. ``--boxes``: a
JSON object from each photo (its path as given, or its file name) to its object's box [x0, y0, x1, y1] in
pixels, for the pointing game.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from studio.attribution.api import method_name
from studio.attribution.evaluation import DEFAULT_METHODS, METRICS, Row, evaluate
from studio.attribution.localisation import TOLERANCE
from studio.attribution.report import write_report
from studio.checks import output_folder
from studio.commands.attribute import add_method_options, given_options, options_per_method
from studio.commands.common import add_weight_arguments, model_from_args, split_model
from studio.errors import StudioError
from studio.io import read_input
from studio.journal import append_record, resume_journal
from studio.models import MODEL_HELP

#: The file in the report folder that keeps finished rows (its first line: the settings they belong to).
ROWS = "rows.jsonl"


def register(subparsers) -> None:
    import argparse

    parser = subparsers.add_parser("evaluate", help="score attribution methods' maps by faithfulness metrics",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("positionals", nargs="+", metavar="[MODEL] PHOTO", help=f"the model ({MODEL_HELP}), photos")
    add_weight_arguments(parser)
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated attribution methods (default: {','.join(DEFAULT_METHODS)})")
    parser.add_argument("--metrics", default=None,
                        help=f"comma-separated, of {','.join(METRICS)} (default: all that apply: ROAD needs 2D "
                             "photos, the pointing game --boxes)")
    parser.add_argument("--target", default=None, help="class index or label, or a unit such as blocks.5:17 "
                                                       "(default: each photo's top-1 class)")
    parser.add_argument("--boxes", default=None, help="JSON file: photo -> [x0, y0, x1, y1], for the pointing game")
    parser.add_argument("--curve-steps", type=int, default=32,
                        help="fractions of the deletion and insertion curves (default: 32; --steps is Integrated "
                             "Gradients')")
    parser.add_argument("--stages", type=int, default=4, help="randomisation cascade stages (default: 4)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help=f"pointing-game tolerance in pixels (default: {TOLERANCE})")
    parser.add_argument("--metric-seed", type=int, default=0,
                        help="seed of the metrics' tie orders, ROAD's imputation noise and the redrawn weights "
                             "(--seed is the methods')")
    parser.add_argument("--out", required=True, help="the report folder")
    add_method_options(parser)
    parser.set_defaults(run=run)


def read_boxes(path: str, photos: list[str]) -> list[list[float]]:
    """Each photo's box from a JSON file mapping photo paths (or file names) to ``[x0, y0, x1, y1]``."""
    try:
        boxes = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise StudioError(f"Cannot read the boxes {path!r}: {error.strerror}.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise StudioError(f"The boxes {path!r} are not JSON ({error}); write {{\"photo.jpg\": [x0, y0, x1, y1]}}.") from None
    if not isinstance(boxes, dict):
        raise StudioError(f"The boxes {path!r} must be one JSON object from photo to [x0, y0, x1, y1].")
    found, missing = [], []
    for photo in photos:
        box = boxes.get(photo, boxes.get(os.path.basename(photo)))
        if box is None:
            missing.append(photo)
        elif not isinstance(box, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
            raise StudioError(f"The box of {photo!r} in {path!r} must be a list of numbers, not {box!r}.")
        found.append(box)
    if missing:
        raise StudioError(f"The boxes {path!r} have no box for {', '.join(map(repr, missing))}.")
    return found


def run(args) -> int:
    args.model, photos = split_model(args.positionals)
    if not photos:
        raise StudioError(f"Name at least one photo after the model {args.model!r}.")
    methods = [method_name(m) for m in args.methods.split(",") if m.strip()]
    metrics = None if args.metrics is None else [m for m in args.metrics.split(",") if m.strip()]
    options = given_options(args, methods)
    out = output_folder(args.out)
    boxes = read_boxes(args.boxes, photos) if args.boxes else None
    settings = {"model": args.model, "random_weights": args.random_weights, "input": args.input, "mean": args.mean,
                "std": args.std, "photos": photos, "methods": methods, "metrics": metrics, "target": args.target,
                "boxes": boxes, "curve_steps": args.curve_steps, "stages": args.stages, "tolerance": args.tolerance,
                "metric_seed": args.metric_seed, "options": options}
    rows_file = out / ROWS
    done = resume_journal(rows_file, settings, "an evaluation", Row.from_dict)
    model = model_from_args(args)
    images = [read_input(photo, model.spec.channels, model.spec.dims).to(model.device) for photo in photos]
    if done:
        print(f"resuming: {len(done)} of {len(photos) * len(methods)} maps already scored in {rows_file}")
    evaluation = evaluate(model, images, methods, metrics, args.target, boxes, names=photos,
                          options=options_per_method(options, model, methods), steps=args.curve_steps, stages=args.stages,
                          tolerance=args.tolerance, seed=args.metric_seed, done=done,
                          on_row=lambda row: append_record(rows_file, row.as_dict()), progress=True)
    table = evaluation.table()
    width = max(len(m) for m in evaluation.methods)
    print(" " * width + "  " + "  ".join(f"{c:>14}" for c in evaluation.columns))
    for method, scores in table.items():
        print(f"{method:<{width}}  " + "  ".join(f"{scores[c]:>14.4g}" for c in evaluation.columns))
    print(f"wrote {', '.join(map(str, write_report(evaluation, out)))}")
    return 0
