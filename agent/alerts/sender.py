"""The one outbox sender: the oldest pending alert first, each exactly once, retried until Telegram takes it.

Delivery rules:
- **Order.** Always the oldest pending row (by id); while it waits (backoff, `retry_after`) nothing
  overtakes it, so alerts queued during an outage go out in the order they were raised.
- **Exactly once.** A row is marked sent in one transaction with the message id Telegram returned.
  The one window left is a crash (or a timeout) after Telegram accepted a message and before that
  transaction: the row was marked "in flight" before the send, so the next attempt knows its first
  outcome is unknown and sends again with a visible "resent: may repeat" line. The Bot API has no
  idempotency key, so a repeat a person can recognise is the best available; a lost alert is worse.
- **Rate limits.** A 429 (`telegram.error.RetryAfter`) waits exactly `retry_after` and retries the
  same row; it does not grow the backoff.
- **Outages.** Network errors and 5xx (`NetworkError`, incl. `TimedOut`: a timeout or a connection
  lost mid-request counts as an unknown outcome, as above) and a refused token
  (`Forbidden`, `InvalidToken`: a configuration to fix, the alerts must wait for it) back off
  exponentially with jitter: initial x 2^(n-1), capped, times (1 + jitter x U[0, 1)).
- **A message Telegram refuses** (400 `BadRequest`, e.g. malformed HTML) cannot succeed by
  retrying: it is marked failed with the reason and kept, and the queue moves on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
import time
import warnings
from collections.abc import Callable

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.warnings import PTBDeprecationWarning

from agent.alerts import outbox
from agent.alerts.settings import TelegramSettings
from agent.store.store import Store
from agent.store.tables import OutboxRow

log = logging.getLogger("signal_agent.alerts")

RESENT = "↻ <i>resent: an earlier attempt's outcome is unknown, this may repeat it</i>\n"


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def keyboard(buttons_json: str) -> InlineKeyboardMarkup | None:
    rows = json.loads(buttons_json or "[]")
    if not rows:
        return None
    return InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=data) for label, data in row]
                                 for row in rows])


def retry_after_seconds(exc: RetryAfter) -> float:
    """`retry_after` in seconds: PTB 22 gives an int (warning that it will become a timedelta) or a timedelta."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        wait = exc.retry_after
    return wait.total_seconds() if isinstance(wait, dt.timedelta) else float(wait)


class OutboxSender:
    """Drains the outbox of `store` to `chat_id` through `bot` (see the module docstring)."""

    def __init__(self, bot: Bot, store: Store, settings: TelegramSettings, run: str, *,
                 clock: Callable[[], int] = wall_ms, rng: random.Random | None = None,
                 idle_poll_s: float = 1.0) -> None:
        self.bot, self.store, self.settings, self.run_name = bot, store, settings, run
        self.clock = clock
        self.rng = rng or random.Random()
        self.idle_poll_s = idle_poll_s
        self.wake = asyncio.Event()
        self.failures = 0  # consecutive failed attempts: the backoff exponent
        self.sent = 0

    def backoff_s(self) -> float:
        s = self.settings
        base = min(s.retry_max_s, s.retry_initial_s * 2 ** max(self.failures - 1, 0))
        return base * (1 + s.retry_jitter * self.rng.random())

    async def _db(self, fn, *args):
        return await asyncio.to_thread(fn, *args)

    async def run(self, stop: asyncio.Event) -> None:
        """Send until `stop` is set; never raises for a send failure (each is recorded on its row)."""
        while not stop.is_set():
            try:
                waited = await self.step()
            except Exception:  # a store hiccup must not end the sender: log it and try again shortly
                log.exception("alerts: the outbox sender failed a step; retrying")
                waited = self.idle_poll_s
            if waited > 0:
                self.wake.clear()
                stopper = asyncio.ensure_future(stop.wait())
                waker = asyncio.ensure_future(self.wake.wait())
                await asyncio.wait({stopper, waker}, timeout=waited, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                waker.cancel()

    async def step(self) -> float:
        """Send the head of the queue if it is due; returns how long to wait before the next step (0: at once)."""
        now = self.clock()
        await self._db(outbox.roll_digest, self.store, self.run_name, self.settings.digest_minutes * 60_000, now)
        row = await self._db(outbox.next_row, self.store)
        if row is None:
            return self.idle_poll_s
        if row.next_attempt_ms > now:
            return min((row.next_attempt_ms - now) / 1000, self.idle_poll_s)
        await self.send(row)
        return 0.0

    async def send(self, row: OutboxRow) -> bool:
        unknown_before = row.last_error == outbox.IN_FLIGHT or row.last_error.startswith("timed out")
        text = (RESENT + row.text) if unknown_before else row.text
        await self._db(outbox.mark_attempt, self.store, row.id, self.clock())
        try:
            message = await self.bot.send_message(
                chat_id=self.settings.chat, text=text, parse_mode=ParseMode.HTML, disable_notification=row.silent,
                reply_markup=keyboard(row.buttons_json), link_preview_options=LinkPreviewOptions(is_disabled=True),
                read_timeout=self.settings.request_timeout_s, write_timeout=self.settings.request_timeout_s,
                connect_timeout=self.settings.request_timeout_s,
            )
        except RetryAfter as exc:
            wait = retry_after_seconds(exc)
            log.warning("alerts: Telegram rate limit, retrying alert %s in %.0f s", row.key, wait)
            await self._db(outbox.mark_retry, self.store, row.id, self.clock() + round(wait * 1000),
                           f"rate limited: retry after {wait:g} s")
            return False
        except BadRequest as exc:
            log.error("alerts: Telegram refused alert %s: %s (kept as failed)", row.key, exc.message)
            await self._db(outbox.mark_failed, self.store, row.id, f"refused by Telegram: {exc.message}")
            return False
        except (NetworkError, Forbidden, InvalidToken, ChatMigrated) as exc:
            # TimedOut is a NetworkError: the message may have arrived, so the retry says it may repeat.
            self.failures += 1
            wait = self.backoff_s()
            # A timeout, or a connection lost after the request went out, may hide a delivered message.
            unknown = isinstance(exc, TimedOut) or (
                exc.message.startswith("httpx.") and not exc.message.startswith("httpx.ConnectError"))
            what = "timed out" if unknown else type(exc).__name__
            log.warning("alerts: sending %s failed (%s: %s); retry %d in %.1f s", row.key, what, exc.message,
                        self.failures, wait)
            await self._db(outbox.mark_retry, self.store, row.id, self.clock() + round(wait * 1000),
                           f"{what}: {exc.message}")
            return False
        self.failures = 0
        self.sent += 1
        await self._db(outbox.mark_sent, self.store, row.id, message.message_id, self.clock())
        return True


class FlushReport:
    """What a bounded flush did: alerts sent, alerts still waiting, and the last error if any."""

    def __init__(self, sent: int, waiting: int, error: str) -> None:
        self.sent, self.waiting, self.error = sent, waiting, error

    def line(self) -> str:
        text = f"Telegram: {self.sent} alert(s) sent, {self.waiting} waiting"
        if self.waiting:
            text += (f" ({self.error or 'not due yet'}; they go out with the next cycle or with `signal-agent run`)"
                     if self.error else " (the digest and later retries send them)")
        return text


async def flush_outbox(tg: TelegramSettings, store: Store, run: str, timeout_s: float) -> FlushReport:
    """Send what is due, for at most `timeout_s`: `signal-agent cycle` uses it (the service does the rest)."""
    from telegram.request import HTTPXRequest

    from agent.alerts.service import redact_token_in_logs

    redact_token_in_logs(tg.bot_token.get_secret_value())
    request = HTTPXRequest(connect_timeout=min(tg.request_timeout_s, timeout_s),
                           read_timeout=min(tg.request_timeout_s, timeout_s),
                           write_timeout=min(tg.request_timeout_s, timeout_s))
    bot = Bot(tg.bot_token.get_secret_value(), base_url=tg.bot_base_url(), request=request)
    sender = OutboxSender(bot, store, tg, run)
    deadline = time.monotonic() + timeout_s
    error = ""
    await asyncio.to_thread(outbox.roll_digest, store, run, tg.digest_minutes * 60_000, wall_ms())
    try:
        async with bot:  # initialize() calls getMe: an unreachable Telegram fails here, the rows wait
            while (left := deadline - time.monotonic()) > 0:
                row = await asyncio.to_thread(outbox.next_row, store)
                due_in = 0.0 if row is None else (row.next_attempt_ms - wall_ms()) / 1000
                if row is None or due_in > left:
                    break
                if due_in > 0:
                    await asyncio.sleep(due_in)
                    continue
                await sender.send(row)
    except TelegramError as exc:  # getMe failed: Telegram unreachable, the rows wait
        error = f"{type(exc).__name__}: {exc.message}"
    row = await asyncio.to_thread(outbox.next_row, store)
    if row is not None and row.last_error and not error:
        error = row.last_error
    return FlushReport(sender.sent, await asyncio.to_thread(outbox.pending_count, store), error)


def flush(tg: TelegramSettings, store: Store, run: str, timeout_s: float = 10.0) -> FlushReport:
    return asyncio.run(flush_outbox(tg, store, run, timeout_s))
