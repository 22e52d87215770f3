"""Realistic capture events of simulated OCPP 1.6 chargers, made the way a link makes them: frames
through the real codec and a `Tracker`, with the back-office's answers. Sessions of MeterValues
(one a simulated minute, with 1 to 3 sampled values) between StartTransaction and StopTransaction.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime

T0 = 1_790_000_000.0  # 2026-09-21, the simulated day starts here


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Charger:
    """One OCPP 1.6 charger on one link: frames through a real Tracker, one minute per step.

    Sessions of `session_minutes` MeterValues (each with `samples` sampled values: the energy
    register first, then Power.Active.Import and Current.Import), bracketed by StartTransaction
    (+ the back-office's transactionId) and StopTransaction. Chargers send MeterValues only inside
    transactions (MeterValuesSampledData during a transaction is the common configuration).
    """

    MEASURANDS = (
        ("Energy.Active.Import.Register", "Wh"),
        ("Power.Active.Import", "W"),
        ("Current.Import", "A"),
    )

    def __init__(
        self, identity: str, *, session_minutes: int, samples: tuple[int, int], seed: int
    ) -> None:
        from proxy.capture.tracker import Tracker
        from proxy.wire.codec import FrameReader, encode_frame

        self.identity = identity
        self.tracker = Tracker(identity, "ocpp1.6")
        self._charger_reader = FrameReader(from_client=True)
        self._upstream_reader = FrameReader(from_client=False)
        self._encode = encode_frame
        self.session_minutes = session_minutes
        self.samples = samples
        self.random = random.Random(seed)
        self.t = T0
        self.wh = self.random.randrange(100_000, 10_000_000)
        self.tx = 0
        self.minute = -1  # -1: no session running
        self.uid = 0
        self.meter_values = 0  # MeterValues sent
        self.sample_count = 0

    def _frame(self, from_charger: bool, frame: list) -> list:
        data = json.dumps(frame, separators=(",", ":")).encode()
        reader = self._charger_reader if from_charger else self._upstream_reader
        [message] = reader.feed(self._encode(1, data, mask=from_charger))
        feed = self.tracker.from_charger if from_charger else self.tracker.from_upstream
        return feed(message, self.t)

    def _exchange(self, action: str, payload: dict, answer: dict) -> list:
        self.uid += 1
        uid = f"{self.identity}-{self.uid:08d}-0000-4000-8000-000000000000"[-36:]
        events = self._frame(True, [2, uid, action, payload])
        self.t += 0.05
        return events + self._frame(False, [3, uid, answer])

    def step(self) -> list:
        """The events of this charger's next minute (a MeterValues, maybe with a Start or Stop)."""
        events = []
        if self.minute < 0:
            self.tx += 1
            events += self._exchange(
                "StartTransaction",
                {
                    "connectorId": 1,
                    "idTag": f"TAG{self.random.randrange(10**6):06d}",
                    "meterStart": self.wh,
                    "timestamp": iso(self.t),
                },
                {"idTagInfo": {"status": "Accepted"}, "transactionId": self.tx},
            )
            self.minute = 0
        self.t += 60.0
        self.wh += self.random.randrange(50, 190)  # 3-11 kW
        n = self.random.randint(*self.samples)
        sampled = [
            {
                "value": str(self.wh),
                "context": "Sample.Periodic",
                "measurand": self.MEASURANDS[0][0],
                "location": "Outlet",
                "unit": "Wh",
            }
        ]
        if n >= 2:
            sampled.append(
                {
                    "value": f"{self.random.uniform(3000, 11000):.1f}",
                    "context": "Sample.Periodic",
                    "measurand": "Power.Active.Import",
                    "location": "Outlet",
                    "unit": "W",
                }
            )
        if n >= 3:
            sampled.append(
                {
                    "value": f"{self.random.uniform(5, 16):.2f}",
                    "context": "Sample.Periodic",
                    "measurand": "Current.Import",
                    "location": "Outlet",
                    "unit": "A",
                    "phase": "L1",
                }
            )
        events += self._exchange(
            "MeterValues",
            {
                "connectorId": 1,
                "transactionId": self.tx,
                "meterValue": [{"timestamp": iso(self.t), "sampledValue": sampled}],
            },
            {},
        )
        self.meter_values += 1
        self.sample_count += n
        self.minute += 1
        if self.minute >= self.session_minutes:
            events += self._exchange(
                "StopTransaction",
                {
                    "transactionId": self.tx,
                    "meterStop": self.wh,
                    "timestamp": iso(self.t),
                    "reason": "EVDisconnected",
                },
                {},
            )
            self.minute = -1
        return events


def fleet_events(
    prefix: str,
    chargers: int,
    minutes: int,
    *,
    session_minutes: int,
    samples: tuple[int, int],
    seed: int = 1,
) -> Iterator[list]:
    """Per simulated minute, per charger: the events, in the order a proxy would submit them."""
    fleet = [
        Charger(
            f"{prefix}{i:05d}",
            session_minutes=session_minutes,
            samples=samples,
            seed=seed * 100_003 + i,
        )
        for i in range(chargers)
    ]
    for _ in range(minutes):
        for charger in fleet:
            yield charger.step()


def count_samples(events: list) -> int:
    """Sampled values in the events (the meter_samples rows they make)."""
    return sum(len(getattr(e, "samples", ())) for e in events)
