"""The charging session as a pure state machine (sans I/O).

- ``state``: the values (state, events, effects) and the EVSE -> connector model;
- ``machine``: ``step(state, event, now, rules) -> (state, effects)``, every rule that changes
  the state in one place;
- ``derive``: what follows from a state (outputs, statuses, timers as effects) and the queries
  the shell asks before acting (``usable``, ``pick_free``, ``reserved_for``);
- ``restore``: the one path from stored state back to a core state at start-up.

The shell that carries the effects out is ocppd/station.py; protocol adapters never step the
core themselves, they call the station's public methods.
"""
