"""``studio layers MODEL``: every named module with its output shape at the model's input size."""

from __future__ import annotations

from studio.commands.common import add_model_arguments, model_from_args


def register(subparsers) -> None:
    parser = subparsers.add_parser("layers", help="list every layer with its output shape")
    add_model_arguments(parser, optional=True)
    parser.set_defaults(run=run)


def run(args) -> int:
    model = model_from_args(args)
    print(f"{model.name}: input {model.spec.size[0]}x{model.spec.size[1]}")
    for name, shape in model.layer_shapes.items():
        label = name or "logits (model output)"
        dims = " x ".join(map(str, shape))
        print(f"  {label:40s} {dims}")
    return 0
