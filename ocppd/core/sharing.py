"""Sharing one charger-wide current limit between connectors. Pure: no I/O, time is an argument.

A ChargePointMaxProfile (OCPP 1.6 §3.13.1, §7.8) and the site's breaker (``[hardware]
max_current_a``) limit the charger as a whole: the sum of what all pilots offer must never
exceed the smaller of the two. The policy, in amperes per phase:

* **Who shares.** Every connector whose pilot could offer current: a running, authorized
  session with an EV plugged in, not stopping, not withheld (invalid idTag, its own limit
  below 6 A, dead meter) and not faulted. Connectors without such a session get nothing and
  count nothing.
* **Each connector's own ceiling** is the smallest of its rating, the cable's rating, its own
  smart-charging limit (Tx or TxDefault profile) and, when its EV draws less than offered, its
  reduced share (``DrawWatch`` below).
* **Admission.** IEC 61851-1 cannot signal less than 6 A, so a connector either gets at least
  6 A or nothing (0 A, the EV pauses: SuspendedEVSE). Connectors are admitted in order while
  6 A for each admitted one still fits in the limit: first those whose EV asks for power
  (pilot C/D), then by session start (earliest first), then by connector id. A connector whose
  ceiling is below 6 A is never admitted.
* **Split.** The admitted connectors share the limit equally ("water filling"): a connector
  whose ceiling is below the equal share keeps only its ceiling, and what it leaves is split
  equally among the others. Shares are whole tenths of an ampere, rounded down.
* **Phases.** Amperes are per phase and summed over connectors whatever their phase count, as
  if every connector drew on the same phase (L1 is shared by single- and three-phase ones):
  never above the limit on any phase, at the price of some unused capacity on L2/L3.
* **When.** The station re-shares on every change of the facts above: a session starts or
  stops, an EV starts or stops asking, a limit or a fault changes, an EV's draw falls or rises.
  Offers that go down are applied before offers that go up, so the sum of the offers never
  exceeds the limit even for an instant. (An EV has up to 5 s to follow a lower offer,
  IEC 61851-1 §A.2.3; a breaker carries that short overlap.)

The reduced-draw rule (``DrawWatch``), per connector:

* An EV *uses less* when its highest phase current is at least ``DRAW_SLACK_A`` (2 A) below
  the offer. When every meter reading for at least ``DRAW_SETTLE_S`` (60 s) shows that, its
  ceiling becomes ``max(6 A, highest current seen meanwhile + DRAW_SLACK_A)``; the rest goes to
  the other connectors at the next re-share.
* The ceiling is lifted as soon as a reading shows the EV within ``DRAW_RECLAIM_A`` (1 A) of
  its offer (it wants more), when its EV starts asking for power again, or when the session
  ends. The 1 A / 2 A gap keeps a steady EV from flapping between the two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

# IEC 61851-1: 6 A is the smallest current a PWM pilot can offer.
MIN_SHARE_A = 6.0
DRAW_SLACK_A = 2.0
DRAW_RECLAIM_A = 1.0
DRAW_SETTLE_S = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Demand:
    """One connector that could be offered current."""

    connector_id: int
    ceiling_a: float  # its own limit: rating, cable, its profiles, reduced draw
    asking: bool  # the EV asks for power (pilot C or D)
    since: float  # session start (any monotonic scale): earlier sessions are admitted first


def _tenths(value_a: float) -> int:
    # round(…, 6) first: 7.3 is 72.99999999999999 tenths in binary floating point
    return max(0, math.floor(round(value_a * 10, 6)))


def share(total_a: float, demands: Sequence[Demand]) -> dict[int, float]:
    """Each demand's share of ``total_a``: 0, or between 6 A and its ceiling. Sum <= total."""
    out = {d.connector_id: 0.0 for d in demands}
    left = _tenths(total_a)
    min_t = _tenths(MIN_SHARE_A)
    order = sorted(
        (d for d in demands if _tenths(d.ceiling_a) >= min_t),
        key=lambda d: (not d.asking, d.since, d.connector_id),
    )
    admitted = order[: left // min_t]
    # water filling: the smallest ceilings first, each taking at most an equal share of the rest
    admitted.sort(key=lambda d: _tenths(d.ceiling_a))
    for i, d in enumerate(admitted):
        give = min(_tenths(d.ceiling_a), left // (len(admitted) - i))
        out[d.connector_id] = give / 10
        left -= give
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class DrawWatch:
    """Whether an EV draws clearly less than it is offered, and the reduced ceiling if so.

    A value: the session core keeps one per connector (``ConnectorState.draw``) and replaces
    it on every reading; ``DrawWatch()`` is the fresh judgement (a session ended, the EV asks
    again). Times are seconds on any monotonic scale: only their differences count."""

    ceiling_a: float | None = None  # None: not reduced
    below_since_s: float | None = None  # since when every reading was clearly below the offer
    peak_a: float = 0.0  # the highest draw since then

    def observe(self, drawn_a: float, offer_a: float | None, now_s: float) -> DrawWatch:
        """The judgement after one meter reading (highest phase current) under ``offer_a``."""
        if offer_a is None or offer_a < MIN_SHARE_A:
            return replace(self, below_since_s=None)  # nothing offered: nothing to judge
        if drawn_a > offer_a - DRAW_RECLAIM_A:
            return DrawWatch()  # it wants more: the ceiling goes
        if drawn_a > offer_a - DRAW_SLACK_A:
            return replace(self, below_since_s=None)  # in between: keep whatever holds now
        if self.below_since_s is None:
            return replace(self, below_since_s=now_s, peak_a=drawn_a)
        peak_a = max(self.peak_a, drawn_a)
        if now_s - self.below_since_s < DRAW_SETTLE_S:
            return replace(self, peak_a=peak_a)
        return replace(self, peak_a=peak_a, ceiling_a=max(MIN_SHARE_A, peak_a + DRAW_SLACK_A))
