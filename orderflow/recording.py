"""Raw websocket recordings (`../shared/data/orderbook/`) as the messages a live stream would yield.

Two line formats (see the data README):
- `binance-raw/`: `<receive time> <json>`, gzip; the time is ns since the epoch (µs in the
  2023 `.dat.gz` files, told apart by magnitude). Stream messages are combined-stream JSON
  (`{"stream": ..., "data": ...}`); a line holding `lastUpdateId` is the REST depth snapshot.
- `multi-exchange-raw/`: `<url> <direction> <unix seconds>: <json>` for the connection and sent
  lines; received lines in the files actually start at `<unix seconds>: ` (no url, no direction).

This is the replay source, an I/O edge sanctioned inside `orderflow/` beside the live clients:
`read_recording` yields messages as fast as possible, `replay` paces them as recorded.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

WS = "ws"  # a message received on the websocket
REST = "rest"  # a REST answer (the depth snapshot) captured in the recording
SENT = "sent"  # a message the recorder sent (subscribe)
CONNECT = "connect"  # a connection was opened


class RecordingError(ValueError):
    """A recording line that fits neither format. `line` is 1-based."""

    def __init__(self, path: str, line: int, detail: str) -> None:
        self.path, self.line = path, line
        super().__init__(f"{path} line {line}: {detail}")


@dataclass(frozen=True, slots=True)
class RecordedMessage:
    time_ns: int  # receive time, ns since the epoch
    kind: str  # WS, REST, SENT or CONNECT
    text: str  # the raw JSON text, exactly as received ("" for CONNECT)
    line: int  # 1-based line number in the file


def _open(path: Path):
    with open(path, "rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", encoding="utf-8") if gz else open(path, encoding="utf-8")


def _to_ns(stamp: str) -> int:
    """A receive time in ns, µs or (fractional) seconds -> ns, by magnitude."""
    if "." in stamp:
        whole, frac = stamp.split(".", 1)
        return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9])
    value = int(stamp)
    if value > 10**17:
        return value  # ns
    if value > 10**14:
        return value * 1_000  # µs
    if value > 10**11:
        return value * 1_000_000  # ms
    return value * 1_000_000_000  # s


def parse_line(raw: str, lineno: int, path: str = "<recording>") -> RecordedMessage | None:
    """One line of either format -> `RecordedMessage`; None for a blank line."""
    line = raw.rstrip("\r\n")
    if not line.strip():
        return None
    if line.startswith(("ws://", "wss://", "http://", "https://")):
        # <url> <direction> <seconds>[: <json>]
        parts = line.split(" ", 3)
        if len(parts) < 3:
            raise RecordingError(path, lineno, "expected '<url> <direction> <seconds>: <json>'")
        direction, rest = parts[1], " ".join(parts[2:])
        stamp, _, body = rest.partition(": ")
        kind = CONNECT if direction == "<->" else SENT if direction == "<-" else WS
        try:
            return RecordedMessage(_to_ns(stamp.rstrip(":")), kind, body, lineno)
        except ValueError:
            raise RecordingError(path, lineno, f"bad time {stamp!r}") from None
    head, sep, body = line.partition(" ")
    if not sep:
        raise RecordingError(path, lineno, "expected '<time> <json>'")
    stamp = head.rstrip(":")
    try:
        t = _to_ns(stamp)
    except ValueError:
        raise RecordingError(path, lineno, f"bad time {head!r}") from None
    kind = REST if body.startswith("{") and '"lastUpdateId"' in body[:40] else WS
    return RecordedMessage(t, kind, body, lineno)


def read_recording(path: str | Path) -> Iterator[RecordedMessage]:
    """Every message of a recording, in file order, as fast as the disk allows."""
    path = Path(path)
    if not path.is_file():
        raise RecordingError(str(path), 0, "no such recording")
    with _open(path) as fh:
        for lineno, raw in enumerate(fh, 1):
            msg = parse_line(raw, lineno, str(path))
            if msg is not None:
                yield msg


async def replay(path: str | Path, speed: float | None = 1.0) -> AsyncIterator[RecordedMessage]:
    """The recording's messages at the recorded pace (`speed` 2.0 = twice as fast; None = no waiting)."""
    loop = asyncio.get_running_loop()
    start_wall = loop.time()
    first_ns: int | None = None
    for msg in read_recording(path):
        if speed is not None:
            if first_ns is None:
                first_ns = msg.time_ns
            due = start_wall + (msg.time_ns - first_ns) / 1e9 / speed
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        yield msg
