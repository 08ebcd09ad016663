"""An MCP3008 slave on gpiozero's mock software-SPI pins (gpiozero ships none).

A channel holds either a voltage or a list of voltages played in turn, one per conversion, so a
1 kHz pilot can be shown as its two plateaus.
"""

from __future__ import annotations

import inspect
from typing import Any

from gpiozero import Device
from gpiozero.pins.mock import MockSPIDevice

# gpiozero 2.0 takes the slave's factory as pin_factory=; 1.6.2 (Debian) has no such argument and
# always takes its pins from Device.pin_factory.
_HAS_PIN_FACTORY = "pin_factory" in inspect.signature(MockSPIDevice.__init__).parameters


class MockMCP3008(MockSPIDevice):  # type: ignore[misc]
    def __init__(self, *, vref: float = 3.3, select_pin: int = 8, pin_factory: Any = None) -> None:
        if pin_factory is None or _HAS_PIN_FACTORY:
            kw = {} if pin_factory is None else {"pin_factory": pin_factory}
            super().__init__(11, 10, 9, select_pin, **kw)
        else:  # gpiozero 1.6: lend it the factory as the default for the pins' creation
            saved, Device.pin_factory = Device.pin_factory, pin_factory
            try:
                super().__init__(11, 10, 9, select_pin)
            finally:
                Device.pin_factory = saved
        self.vref = vref
        self.bits = 10
        self.channels: list[float | list[float]] = [0.0] * 8
        self._turn = [0] * 8
        self.state = "idle"

    def voltage(self, ch: int) -> float:
        value = self.channels[ch]
        if isinstance(value, list):
            self._turn[ch] = (self._turn[ch] + 1) % len(value)
            return value[self._turn[ch]]
        return value

    def on_start(self) -> None:
        super().on_start()
        self.state = "idle"

    def on_bit(self) -> None:
        if self.state == "idle":
            if self.rx_buf[-1]:  # start bit
                self.state, self.rx_buf = "mode", []
        elif self.state == "mode":
            self.state = "single" if self.rx_buf[-1] else "diff"
            self.rx_buf = []
        elif self.state in ("single", "diff"):
            if len(self.rx_buf) == 3:
                ch = self.rx_word()
                v = self.voltage(ch)
                if self.state == "diff":
                    v -= self.voltage(ch ^ 1)
                code = int(round(max(0.0, min(self.vref, v)) / self.vref * (2**self.bits - 1)))
                self.tx_word(code, self.bits + 2)
                self.state = "result"
        elif self.state == "result" and not self.tx_buf:
            self.state, self.rx_buf = "idle", []
