"""``studio layers [MODEL]``: every named module with its output shape and layout at the model's input size."""

from __future__ import annotations

from studio.commands.common import add_model_arguments, model_from_args
from studio.errors import StudioError
from studio.targets import display_layer, layer_info


def register(subparsers) -> None:
    parser = subparsers.add_parser("layers", help="list every layer with its output shape and layout")
    add_model_arguments(parser, optional=True)
    parser.set_defaults(run=run)


def run(args) -> int:
    model = model_from_args(args)
    print(f"{model.name}: input {model.spec.describe()} (channels x size)")
    for name, shape in model.layer_shapes.items():
        label = "logits (model output)" if not name else display_layer(name)
        try:
            layout = layer_info(model, name).describe()
        except StudioError:
            layout = "not a target (windows or scalar)"
        print(f"  {label:40s} {' x '.join(map(str, shape)):18s} {layout}")
    return 0
