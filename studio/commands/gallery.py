"""``studio gallery SPEC.toml --out DIR``: render a gallery spec, resumably, with provenance."""

from __future__ import annotations

from studio.commands.common import add_ray_argument


def register(subparsers) -> None:
    parser = subparsers.add_parser("gallery", help="render a TOML gallery spec to PNGs, contact sheets and index.html",
                                   description="Render every unit of a gallery spec. Running it again skips what "
                                               "is complete and redoes only missing or changed units.")
    parser.add_argument("spec", metavar="SPEC.toml", help="gallery spec (see gallery/example.toml)")
    parser.add_argument("--out", default=None, help="output folder (default: dir in the spec's [output] table)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA when present)")
    parser.add_argument("--check", action="store_true", help="validate the spec and show what a run would do")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_ray_argument(parser, "render on Ray workers")
    parser.add_argument("--workers", type=int, default=None,
                        help="Ray workers (default: one per GPU, else as many as the CPUs hold)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from studio import gallery

    if args.check:
        work = gallery.plan(args.spec, args.out, device=args.device)
        spec = work.spec
        print(f"{spec.source}: valid; {len(spec.items)} images of {len(spec.units)} units from "
              f"{len(spec.models)} model(s); {len(work.done)} complete in {work.out_dir}, {len(work.pending)} to render"
              + (f", {len(work.attribution_todo)} units to attribute" if spec.attribution.photos else "")
              + (f", {len(work.examples_todo)} units to show dataset examples for" if spec.examples.index else ""))
        return 0
    report = gallery.run(args.spec, args.out, device=args.device, progress=not args.quiet, ray=args.ray,
                         workers=args.workers)
    per_image = f" ({report.seconds_per_image:.2f} s per image)" if report.rendered else ""
    print(f"rendered {len(report.rendered)}, skipped {len(report.skipped)} already complete{per_image}"
          + (f", attributed {len(report.attributed)} units" if report.attributed else "")
          + (f", dataset examples for {len(report.examples)} units" if report.examples else "")
          + (f"; out of GPU memory {len(report.halvings)}x, batch halved" if report.halvings else ""))
    print(f"wrote {report.index} and {len(report.sheets)} contact sheet(s) in {report.seconds:.1f} s")
    return 0
