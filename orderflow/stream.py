"""What every live stream client shares: reconnect backoff with jitter, and a bounded inbox.

The inbox sits between the websocket reader and the consumer that applies messages to the book.
When the consumer falls behind and the inbox is full, the *oldest* message is dropped and the
drop is reported, so memory stays bounded and the book is resynced rather than silently wrong.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter").

    The n-th consecutive failure waits uniform(0, min(max_s, initial_s * 2**n)) seconds, so many
    clients dropped at once do not reconnect in lockstep.
    """

    initial_s: float = 0.5
    max_s: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        cap = min(self.max_s, self.initial_s * 2 ** min(attempt, 30))
        return rng.uniform(0.0, cap)


class Inbox:
    """A bounded FIFO of raw messages that drops the oldest when full, counting what it dropped."""

    def __init__(self, maxsize: int) -> None:
        if maxsize <= 0:
            raise ValueError(f"inbox size must be positive, got {maxsize}")
        self._queue: asyncio.Queue = asyncio.Queue(maxsize)
        self.dropped = 0
        self._unreported = 0

    def put(self, item) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._queue.get_nowait()
            self.dropped += 1
            self._unreported += 1
            self._queue.put_nowait(item)

    async def get(self):
        return await self._queue.get()

    def take_dropped(self) -> int:
        """Drops since the last call (the consumer resyncs when this is not zero)."""
        n, self._unreported = self._unreported, 0
        return n

    def clear(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    def __len__(self) -> int:
        return self._queue.qsize()
