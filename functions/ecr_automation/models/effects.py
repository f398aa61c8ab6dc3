"""Side effects as records: every write this application makes is reported as one ``Effect``.

In Lambda the records go to the structured log (an audit trail); the local runner prints them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Effect:
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.fields}


class EffectSink(Protocol):
    def record(self, effect: Effect) -> None: ...


class CollectingSink:
    """Keeps effects in memory: for tests and for the local runner."""

    def __init__(self) -> None:
        self.effects: list[Effect] = []

    def record(self, effect: Effect) -> None:
        self.effects.append(effect)

    def kinds(self) -> list[str]:
        return [effect.kind for effect in self.effects]
