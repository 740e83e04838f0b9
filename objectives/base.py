"""The objective algebra: objectives map captured activations to one value per image (``[B]``) to maximise.

Objectives combine with ``+ - * /`` (with numbers and with each other), keep readable names, and report
the value of every named term, so a batch can hold many units and each image keeps its own loss.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping

import torch

#: Key of the un-transformed parameterised images ``[B, 3, H, W]`` in the activations mapping.
IMAGE = "<image>"

Activations = Mapping[str, torch.Tensor]
Number = int | float


class Objective:
    """A named function from activations to a ``[B]`` tensor that the engine maximises."""

    def __init__(self, fn: Callable[[Activations], torch.Tensor], name: str, layers: frozenset[str] = frozenset(),
                 children: tuple = (), op: Callable | None = None, bind: Callable | None = None) -> None:
        self.fn, self.name, self.layers = fn, name, frozenset(layers)
        self.children, self.op, self._bind = children, op, bind

    def bind(self, model) -> Objective:
        """Let every term that reads the model itself (a caricature's photo activations) read it; the engine
        calls this before the first step. Returns the objective."""
        for leaf in self.leaves:
            if leaf._bind is not None:
                leaf._bind(model)
        return self

    def __call__(self, acts: Activations) -> torch.Tensor:
        return self.evaluate(acts)[0]

    def evaluate(self, acts: Activations) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The total value ``[B]`` and the value ``[B]`` of each leaf term, keyed by its name."""
        terms: dict[str, torch.Tensor] = {}
        return self._evaluate(acts, terms), terms

    def _evaluate(self, acts: Activations, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.op is None:
            value = self.fn(acts)
            key, n = self.name, 2
            while key in terms:
                key, n = f"{self.name} #{n}", n + 1
            terms[key] = value
            return value
        values = [c._evaluate(acts, terms) if isinstance(c, Objective) else c for c in self.children]
        return self.op(*values)

    @property
    def leaves(self) -> list[Objective]:
        """The leaf objectives in evaluation order."""
        if self.op is None:
            return [self]
        return [leaf for c in self.children if isinstance(c, Objective) for leaf in c.leaves]

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    def _combine(self, other: Objective | Number, op: Callable, symbol: str, reflected: bool = False) -> Objective:
        if not isinstance(other, (Objective, int, float)):
            return NotImplemented
        left, right = (other, self) if reflected else (self, other)
        name = f"{_operand_name(left, symbol)} {symbol} {_operand_name(right, symbol, right_side=True)}"
        layers = self.layers | (other.layers if isinstance(other, Objective) else frozenset())
        return Objective(None, name, layers, (left, right), op)

    def __add__(self, other):
        return self._combine(other, operator.add, "+")

    def __radd__(self, other):
        return self._combine(other, operator.add, "+", reflected=True)

    def __sub__(self, other):
        return self._combine(other, operator.sub, "-")

    def __rsub__(self, other):
        return self._combine(other, operator.sub, "-", reflected=True)

    def __mul__(self, other):
        return self._combine(other, operator.mul, "*")

    def __rmul__(self, other):
        return self._combine(other, operator.mul, "*", reflected=True)

    def __truediv__(self, other):
        return self._combine(other, operator.truediv, "/")

    def __rtruediv__(self, other):
        return self._combine(other, operator.truediv, "/", reflected=True)

    def __neg__(self) -> Objective:
        return Objective(None, f"-{_operand_name(self, '*')}", self.layers, (self,), operator.neg)


_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


def _operand_name(operand: Objective | Number, symbol: str, right_side: bool = False) -> str:
    """Name of an operand, parenthesised where precedence requires it."""
    if not isinstance(operand, Objective):
        return f"{operand:g}"
    inner = _top_symbol(operand)
    if inner is None:
        return operand.name
    weaker = _PRECEDENCE[inner] < _PRECEDENCE[symbol]
    ambiguous = right_side and _PRECEDENCE[inner] == _PRECEDENCE[symbol] and symbol in "-/"
    return f"({operand.name})" if weaker or ambiguous else operand.name


def _top_symbol(objective: Objective) -> str | None:
    symbols = {operator.add: "+", operator.sub: "-", operator.mul: "*", operator.truediv: "/"}
    return symbols.get(objective.op)


def as_objective(value: Objective | Callable[[Activations], torch.Tensor], name: str = "custom",
                 layers: frozenset[str] = frozenset()) -> Objective:
    """Wrap a plain function of activations (returning ``[B]``) as an objective."""
    return value if isinstance(value, Objective) else Objective(value, name, layers)
