"""The pieces of the station shell (ocppd/station.py) that are not orchestration: timers,
hardware outputs, start-up recovery from storage, meter sampling, and the connector views."""
