"""The floor: the least an OCPP-J charge point client can be, as its own process.

A minimal aiohttp client that connects, sends BootNotification and waits for its CALLRESULT;
nothing else is imported (no validation, no storage, no hardware). It is what ocppd's start-up,
memory and replay figures are compared with.

    floor_client.py URL CP_ID [--replay N]

Prints ``BOOTED`` once the BootNotification was answered. Without ``--replay`` it then stays
connected and answers any CALL from the Central System with a fixed CALLRESULT (the transport
floor for call latency), until stdin closes. With ``--replay N`` it sends N MeterValues frames
one at a time, each after the CALLRESULT of the one before (what ocppd does with a backlog, minus
persistence and validation), prints ``REPLAYED N SECONDS`` and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp


def meter_payload(i: int) -> dict[str, object]:
    # The same frames as ocppd.storage.bench.meter_payload (the floor imports nothing of ocppd).
    return {
        "connectorId": 1,
        "transactionId": 1234,
        "meterValue": [{
            "timestamp": f"2024-05-01T12:{i // 60 % 60:02d}:{i % 60:02d}Z",
            "sampledValue": [
                {"value": str(1000 + i), "measurand": "Energy.Active.Import.Register",
                 "unit": "Wh", "context": "Sample.Periodic"},
                {"value": "7200", "measurand": "Power.Active.Import", "unit": "W"},
            ],
        }],
    }


async def call(ws: aiohttp.ClientWebSocketResponse, n: int, action: str, payload: object) -> None:
    await ws.send_str(json.dumps([2, str(n), action, payload], separators=(",", ":")))
    while True:
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise SystemExit(f"floor: connection lost waiting for {action}")
        frame = json.loads(msg.data)
        if frame[0] in (3, 4) and frame[1] == str(n):
            return


async def answer_calls(ws: aiohttp.ClientWebSocketResponse) -> None:
    async for msg in ws:
        if msg.type is aiohttp.WSMsgType.TEXT:
            frame = json.loads(msg.data)
            if frame[0] == 2:
                reply: dict[str, object] = {"status": "Accepted"}
                if frame[2] == "GetConfiguration":
                    reply = {"configurationKey": []}
                await ws.send_str(json.dumps([3, frame[1], reply], separators=(",", ":")))


async def main(url: str, cp_id: str, replay: int | None) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(
            f"{url}/{cp_id}", protocols=("ocpp1.6",)) as ws:
        boot = {"chargePointVendor": "floor", "chargePointModel": "floor"}
        await call(ws, 0, "BootNotification", boot)
        print("BOOTED", flush=True)
        if replay is None:
            serve = asyncio.ensure_future(answer_calls(ws))
            stdin = asyncio.StreamReader()
            await asyncio.get_running_loop().connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
            await stdin.read()  # until the benchmark closes stdin (or dies)
            serve.cancel()
            return
        frames = [meter_payload(i) for i in range(replay)]
        t0 = time.monotonic()
        for i, payload in enumerate(frames, start=1):
            await call(ws, i, "MeterValues", payload)
        print(f"REPLAYED {replay} {time.monotonic() - t0:.6f}", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    n = int(args[args.index("--replay") + 1]) if "--replay" in args else None
    asyncio.run(main(args[0], args[1], n))
