"""How a meter reading becomes OCPP 1.6 SampledValues (§7.43)."""

from __future__ import annotations

from ocppd.hw.base import MeterReading
from ocppd.ocpp.v16.mapping import sampled_values
from ocppd.ocpp.validate import Validator


def test_temperature_goes_out_as_celcius_and_passes_the_schema() -> None:
    # OCPP 1.6 schemas, 2025-04 erratum: both spellings are valid, and charge points are advised
    # to keep sending the original "Celcius" so that a Central System validating against the
    # first published schemas does not discard the MeterValues.
    reading = MeterReading(energy_import_wh=1234.0, temperature_c=41.5)
    values = sampled_values(reading, ["Temperature"], context="periodic", offered_a=None)
    assert [(v["measurand"], v["unit"], v["value"]) for v in values] == [
        ("Temperature", "Celcius", "41.5")
    ]
    payload = {
        "connectorId": 1,
        "meterValue": [{"timestamp": "2024-01-01T00:00:00Z", "sampledValue": values}],
    }
    Validator().check_request("MeterValues", payload)
