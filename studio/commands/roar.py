"""studio roar: remove and retrain (and keep and retrain) for attribution methods (Hooker et al. 2019).

    studio roar SPEC.toml --out report/        # the benchmark a spec describes (see studio.retraining.spec)
    studio roar --demo --out report/           # the demo: grey gratings whose label lives in one square

For every estimate and fraction, the top pixels of each training and test image (by the estimate, for the
image's label) are replaced by the training mean (ROAR; KAR replaces the rest), a model is trained from scratch
on the degraded set and tested on the degraded test set; random maps and Sobel edges are the controls. Writes
report/roar.csv, roar.json and roar.png. Every finished model is kept in report/cells.jsonl (maps and the clean
model beside it), so rerunning the same command after a kill trains only what was left.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from studio.errors import StudioError
from studio.retraining import RoarSpec, demo_dataset, demo_cnn, roar, write_roar_report
from studio.retraining.spec import load_spec


def register(subparsers) -> None:
    parser = subparsers.add_parser("roar", help="remove and retrain: do an estimate's top pixels hold what a model "
                                   "needs?", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", nargs="?", help="the benchmark, a TOML file (or --demo)")
    parser.add_argument("--demo", action="store_true", help="the demo benchmark, a few minutes on a CPU")
    parser.add_argument("--out", required=True, help="the report folder (resumed when it holds this benchmark)")
    parser.add_argument("--fill", choices=("mean", "impute"), default=None,
                        help="how removed pixels are filled (default: the spec's, else the training mean; impute: "
                             "ROAD's noisy linear imputation)")
    parser.add_argument("--device", default="cpu", help="where models train and maps are computed (default: cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args) -> int:
    if (args.spec is None) == (not args.demo):
        raise StudioError("Give studio roar a spec file or --demo, one of them.")
    spec = load_spec(args.spec) if args.spec else RoarSpec(demo_dataset(), demo_cnn, "demo-cnn")
    if args.fill is not None:
        spec = replace(spec, fill=args.fill)
    result = roar(spec, args.out, device=args.device, progress=not args.quiet)
    written = write_roar_report(result, args.out)
    print(f"{spec.data.description}; clean accuracy {sum(result.clean) / len(result.clean):.3f}, "
          f"chance {result.chance:.3f}")
    for mode in spec.modes:
        print(f"{mode.upper():<5} " + "  ".join(f"{f:>5.2f}" for f in spec.fractions))
        for estimate in spec.estimates:
            _, means, _ = result.curve(estimate, mode)
            print(f"  {estimate:<22}" + "  ".join(f"{m:5.3f}" for m in means[1:]))
    print("wrote " + ", ".join(str(path) for path in written))
    return 0
