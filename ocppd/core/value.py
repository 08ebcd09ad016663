"""``@value``: a frozen, keyword-only dataclass made at its first instantiation.

Python makes a dataclass's ``__init__``, ``__eq__``, ``__hash__``, ``__repr__`` and frozen
``__setattr__`` by compiling generated source, about 0.6 ms per class on Python 3.11. The session
core's vocabulary has dozens of classes, and a charger meets many of them late or never (a
reservation, a lock failure, a clock step), so a class declared with ``@value`` becomes a
dataclass when it is first instantiated instead of at import: start-up pays only for what it
uses (the ``__new__`` that does it stays: a dictionary lookup per instance). Type checkers see a
frozen keyword-only dataclass (``dataclass_transform``). Until its first instance the class is
not yet a dataclass for ``dataclasses.fields`` and the like; the core asks no such thing of
its vocabulary.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")


@dataclass_transform(kw_only_default=True, frozen_default=True)
def value(cls: type[T]) -> type[T]:
    def __new__(klass: type[Any], *args: Any, **kwargs: Any) -> Any:
        if "__dataclass_fields__" not in cls.__dict__:
            dataclasses.dataclass(frozen=True, kw_only=True)(cls)
        return object.__new__(klass)

    cls.__new__ = staticmethod(__new__)  # type: ignore[assignment]
    return cls

