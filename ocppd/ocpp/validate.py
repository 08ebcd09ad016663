"""Schema validation of OCPP 1.6 payloads against the vendored JSON schemas (schemas/README.md).

A validation failure becomes the CALLERROR code OCPP-J 1.6 §4.2.3 names for it. Schemas are
compiled with fastjsonschema on first use of an action, and fastjsonschema itself is imported
then, so start-up stays cheap on a Pi.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocppd.ocpp.rpc import CallErrorCode, OcppCallError

if TYPE_CHECKING:
    import fastjsonschema

log = logging.getLogger("ocppd.link")

_Check = Callable[[Any], Any]

# fastjsonschema's failed rule -> OCPP-J 1.6 §4.2.3 error code
_RULE_CODE: dict[str, CallErrorCode] = {
    "required": CallErrorCode.OccurenceConstraintViolation,
    "minItems": CallErrorCode.OccurenceConstraintViolation,
    "maxItems": CallErrorCode.OccurenceConstraintViolation,
    "minProperties": CallErrorCode.OccurenceConstraintViolation,
    "maxProperties": CallErrorCode.OccurenceConstraintViolation,
    "type": CallErrorCode.TypeConstraintViolation,
    "additionalProperties": CallErrorCode.FormationViolation,
}


def _code_for(exc: fastjsonschema.JsonSchemaValueException) -> CallErrorCode:
    rule = getattr(exc, "rule", None) or ""
    if rule == "type" and (exc.name or "data") == "data":
        return CallErrorCode.FormationViolation  # the payload itself is not an object
    # enum, maxLength, minimum, maximum, pattern, format, multipleOf, uniqueItems, ...
    return _RULE_CODE.get(rule, CallErrorCode.PropertyConstraintViolation)


def _where(exc: fastjsonschema.JsonSchemaValueException) -> str:
    name = exc.name or "data"
    return "payload" + name[len("data"):] if name.startswith("data") else name


#: The vendored schemas, installed with the package (a plain directory, never a zip archive).
SCHEMAS = Path(__file__).resolve().parent / "schemas" / "v16"


class Validator:
    """Validates requests and responses of the OCPP 1.6 actions the schemas describe."""

    # fastjsonschema's failure, known once the first schema is compiled (see _checker)
    _invalid: type[fastjsonschema.JsonSchemaValueException]

    def __init__(self, folder: Path = SCHEMAS) -> None:
        self._root = folder
        self._actions: frozenset[str] | None = None
        self._compiled: dict[str, _Check] = {}

    @property
    def actions(self) -> frozenset[str]:
        if self._actions is None:
            names = {p.name[: -len(".json")] for p in self._root.iterdir()
                     if p.name.endswith(".json")}
            self._actions = frozenset(n for n in names if f"{n}Response" in names)
        return self._actions

    def knows(self, action: str) -> bool:
        return action in self.actions

    def _checker(self, name: str) -> _Check:
        check = self._compiled.get(name)
        if check is None:
            # utf-8-sig: some releases of the source files carry a byte order mark
            text = self._root.joinpath(f"{name}.json").read_text(encoding="utf-8-sig")
            import fastjsonschema  # here, not at start-up: the import takes milliseconds

            self._invalid = fastjsonschema.JsonSchemaValueException
            check = fastjsonschema.compile(json.loads(text))
            self._compiled[name] = check
        return check

    def _check(self, action: str, schema: str, payload: Any, what: str) -> None:
        if not self.knows(action):
            raise OcppCallError(CallErrorCode.NotImplemented, f"unknown action {action!r}"[:200])
        check = self._checker(schema)
        try:
            check(payload)
        except self._invalid as exc:
            description = f"{action} {what}: {_where(exc)} {exc.message.split(' ', 1)[-1]}"
            raise OcppCallError(_code_for(exc), description[:200],
                                {"rule": getattr(exc, "rule", None) or ""}) from None
        except RecursionError:
            # Only reachable through fields the schema leaves open; nested beyond reason.
            raise OcppCallError(CallErrorCode.FormationViolation,
                                f"{action} {what}: nested too deeply") from None

    @property
    def compiled(self) -> frozenset[str]:
        """The schemas compiled so far (request names, ``<action>Response`` for responses)."""
        return frozenset(self._compiled)

    def warm(self, action: str) -> None:
        """Compile the request and response schemas of ``action`` now, not at its first use
        (ocppd.warmup does it in idle time after the boot)."""
        if self.knows(action):
            self._checker(action)
            self._checker(f"{action}Response")

    def check_request(self, action: str, payload: Any) -> None:
        """Raise OcppCallError if ``payload`` is not a valid ``action`` request."""
        self._check(action, action, payload, "request")

    def check_response(self, action: str, payload: Any) -> None:
        """Raise OcppCallError if ``payload`` is not a valid ``action`` response (.conf)."""
        self._check(action, f"{action}Response", payload, "response")
