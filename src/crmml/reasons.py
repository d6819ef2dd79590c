"""Reasons kept as codes and numbers, rendered to text once, by the door that needs text.

A :class:`Reasons` holds, per kind of reason, which customers have it (a bool mask) and the
numbers its sentence quotes; :meth:`Reasons.texts` renders every customer's reasons joined by
``"; "`` (the ``reasons`` column of :data:`crmml.scorer.SCORE_COLUMNS`) and
:meth:`Reasons.lists` as lists (the service's answer). A sentence is formatted only for the
customers that have it, kind by kind, and the sentences are joined column-wise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Reasons", "formatted"]


def formatted(values: np.ndarray, spec: str) -> list[str]:
    """``format(v, spec)`` for each value (as Python floats, which format several times faster than
    NumPy scalars)."""
    return [format(v, spec) for v in np.asarray(values, dtype=np.float64).tolist()]


@dataclass
class Reasons:
    """Per customer, the reasons behind a score, in order of :attr:`kinds`.

    Each kind is ``(mask, render)``: ``render(positions)`` returns the sentences of the customers
    at ``positions`` (those where ``mask`` is set), in order.
    """

    n: int
    kinds: list[tuple[np.ndarray, Callable[[np.ndarray], list[str]]]] = field(default_factory=list)

    def add(self, mask: np.ndarray, render: Callable[[np.ndarray], list[str]]) -> None:
        self.kinds.append((np.asarray(mask, dtype=bool), render))

    def add_text(self, mask: np.ndarray, text: str) -> None:
        """A reason with a fixed sentence."""
        self.add(mask, lambda positions: [text] * len(positions))

    def extend(self, other: Reasons) -> None:
        self.kinds.extend(other.kinds)

    def texts(self) -> np.ndarray:
        """Object array: each customer's sentences joined by ``"; "`` (``""`` for none)."""
        out = np.full(self.n, "", dtype=object)
        has = np.zeros(self.n, dtype=bool)
        for mask, render in self.kinds:
            positions = np.flatnonzero(mask)
            if not len(positions):
                continue
            sentences = np.array(render(positions), dtype=object)
            before = has[positions]
            joined = sentences.copy()
            joined[before] = out[positions[before]] + "; " + sentences[before]
            out[positions] = joined
            has[positions] = True
        return out

    def lists(self) -> list[list[str]]:
        """Each customer's sentences as a list."""
        out: list[list[str]] = [[] for _ in range(self.n)]
        for mask, render in self.kinds:
            positions = np.flatnonzero(mask)
            if len(positions):
                for i, sentence in zip(positions.tolist(), render(positions), strict=True):
                    out[i].append(sentence)
        return out
