"""``@value`` (ocppd/core/value.py): a frozen keyword-only dataclass, made at first use."""

from __future__ import annotations

import dataclasses

import pytest

from ocppd.core.value import value


def test_a_value_is_made_a_dataclass_at_its_first_instance_and_behaves_as_one() -> None:
    @value
    class Reading:
        connector_id: int
        energy_wh: float | None = None

    assert not dataclasses.is_dataclass(Reading)  # nothing compiled at declaration
    r = Reading(connector_id=1, energy_wh=2.5)
    assert dataclasses.is_dataclass(Reading)
    assert r == Reading(connector_id=1, energy_wh=2.5) != Reading(connector_id=2)
    assert hash(r) == hash(Reading(connector_id=1, energy_wh=2.5))
    assert repr(r).endswith("Reading(connector_id=1, energy_wh=2.5)")
    assert dataclasses.replace(r, energy_wh=None) == Reading(connector_id=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.connector_id = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        Reading(1)  # type: ignore[misc]  # keyword-only
    match r:
        case Reading(connector_id=1, energy_wh=wh):
            assert wh == 2.5
        case _:
            pytest.fail("a keyword class pattern must match")


def test_the_session_vocabulary_is_made_of_values() -> None:
    from ocppd.core.session import state

    made_at_use = [n for n, c in vars(state).items()
                   if isinstance(c, type) and c.__module__ == state.__name__
                   and "__new__" in c.__dict__]
    assert len(made_at_use) >= 40
