"""The alerts service: the outbox sender, the bot's updates (buttons, price replies, commands) and the
periodic work (ticket expiry, position events from the store, the daily report), on one asyncio loop.

python-telegram-bot's `Application` does the Bot API work: it polls `getUpdates` (retrying network
errors itself) and routes each update to a handler. It is pointed at `TELEGRAM_API_URL` through
its `base_url` (PTB appends the token: `<api url>/bot<token>/<method>`).

Only the configured chat is served: a gatekeeper handler runs before all others and drops (and
logs) any update from another chat, so a stranger who finds the bot can neither press a ticket's
buttons nor run a command.

The daily report is not a scheduler job: the periodic tick queues it once the report time has
passed, under the idempotency key `report:<run>:<local date>`, so a restart neither skips nor
repeats a day's report, and a service that was down at report time sends it when it comes back.

`signal-agent run` keeps its cycles in the main thread (signals, grace period) and runs this
service on its own loop in a `ServiceThread`; `serve` can `await start()` on its own loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from html import escape

from sqlmodel import select
from telegram import ForceReply, Update
from telegram.constants import ParseMode
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from agent.alerts import answers, monitor, outbox
from agent.alerts.control import is_paused, set_paused
from agent.alerts.messages import CLOSED, EXECUTED, SKIPPED, Alert, money, price, signed_money
from agent.alerts.report import daily_report, report_due
from agent.alerts.sender import OutboxSender, wall_ms
from agent.alerts.settings import TelegramSettings
from agent.store.store import Store
from agent.store.tables import AccountSnapshotRow, CycleRow, OrderRow, PositionRow, TicketRow
from risk.config import RiskConfig

log = logging.getLogger("signal_agent.alerts")

COMMANDS = ("status", "positions", "pause", "resume", "report")


# The token is part of every Bot API URL: httpx logs request URLs at INFO, PTB the base URL at DEBUG.
# A filter acts only on its own logger's records, so every logger of these packages gets one.
TOKEN_LOGGER_PREFIXES = ("httpx", "httpcore", "telegram", "signal_agent.alerts")


class RedactToken(logging.Filter):
    """Replaces the bot token in log records by '<token>', whoever configured logging and at what level."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.token and self.token in message:
            record.msg, record.args = message.replace(self.token, "<token>"), None
        return True


def redact_token_in_logs(token: str) -> None:
    """Install `RedactToken` on every logger of httpx, httpcore and python-telegram-bot (all created at import)."""
    names = {n for n in logging.root.manager.loggerDict if n.startswith(TOKEN_LOGGER_PREFIXES)}
    for name in sorted(names | set(TOKEN_LOGGER_PREFIXES)):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactToken) and f.token == token for f in logger.filters):
            logger.addFilter(RedactToken(token))


class AlertService:
    """See the module docstring. `start()` returns at once; connecting (and reconnecting) happens in the
    background, so an unreachable Telegram never stops the caller, and the outbox waits for it."""

    def __init__(self, tg: TelegramSettings, store: Store, run: str, *, risk: RiskConfig | None = None,
                 initial_cash: float = 10_000.0, lock: threading.Lock | None = None,
                 clock: Callable[[], int] = wall_ms, tick_s: float = 5.0, settings: object | None = None,
                 drain_s: float = 5.0) -> None:
        if not tg.configured:
            raise ValueError("Telegram is not configured: TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID are needed")
        self.tg, self.store, self.run_name = tg, store, run
        redact_token_in_logs(tg.bot_token.get_secret_value())
        self.risk = risk or RiskConfig()
        self.initial_cash = initial_cash
        self.lock = lock or threading.Lock()
        self.clock = clock
        self.tick_s = tick_s
        self.settings = settings
        self.drain_s = drain_s
        self.app: Application | None = None
        self.sender: OutboxSender | None = None
        self.connected = asyncio.Event()
        self._stop: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self.ignored = 0  # updates dropped because they came from another chat

    # --- lifecycle ----------------------------------------------------------------------------

    def _build(self) -> Application:
        tg = self.tg
        app = (Application.builder().token(tg.bot_token.get_secret_value()).base_url(tg.bot_base_url())
               .read_timeout(tg.request_timeout_s).write_timeout(tg.request_timeout_s)
               .connect_timeout(tg.request_timeout_s).get_updates_read_timeout(tg.request_timeout_s)
               .get_updates_connect_timeout(tg.request_timeout_s).job_queue(None).build())
        app.add_handler(TypeHandler(Update, self._gatekeeper), group=-1)
        for name in COMMANDS:
            app.add_handler(CommandHandler(name, getattr(self, f"_cmd_{name}")))
        app.add_handler(CallbackQueryHandler(self._on_button))
        app.add_handler(MessageHandler(filters.REPLY & filters.TEXT & ~filters.COMMAND, self._on_reply))
        app.add_handler(MessageHandler(filters.TEXT | filters.COMMAND, self._on_other))  # anything else: help
        app.add_error_handler(self._on_error)
        return app

    async def start(self) -> None:
        self._stop = asyncio.Event()
        self.app = self._build()
        # Backoff and retry_after are physical waits: the sender keeps the wall clock whatever `clock` says.
        self.sender = OutboxSender(self.app.bot, self.store, self.tg, self.run_name)
        self._tasks = [asyncio.create_task(self._connect()), asyncio.create_task(self._periodic())]

    async def stop(self) -> None:
        if self._stop is None:
            return
        self._stop.set()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, timeout=self.tg.request_timeout_s + 5)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
        app = self.app
        if app is not None and self.connected.is_set():
            await self._drain(self.drain_s)
            try:
                if app.updater is not None and app.updater.running:
                    await app.updater.stop()
                if app.running:
                    await app.stop()
                await app.shutdown()
            except TelegramError as exc:
                log.warning("alerts: error while stopping the bot: %s", exc)
        self._stop = None

    async def _drain(self, seconds: float) -> None:
        """At stop: send what is due for up to `seconds` (a `run --once` still delivers its ticket)."""
        assert self.sender is not None
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            row = await asyncio.to_thread(outbox.next_row, self.store)
            if row is None or row.next_attempt_ms > wall_ms():
                return
            try:
                await asyncio.wait_for(self.sender.send(row), timeout=max(deadline - time.monotonic(), 0.1))
            except Exception as exc:  # the row stays queued (marked in flight): the next start sends it
                log.warning("alerts: could not send %s before stopping: %s", row.key, exc)
                return

    async def _connect(self) -> None:
        """Initialise the bot (getMe) until it works, then poll updates and run the sender."""
        assert self.app is not None and self.sender is not None and self._stop is not None
        wait = self.tg.retry_initial_s
        while not self._stop.is_set():
            try:
                await self.app.initialize()
                break
            except TelegramError as exc:
                log.warning("alerts: cannot reach the Bot API (%s); retrying in %.0f s", exc, wait)
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=wait)
                except TimeoutError:
                    pass
                wait = min(wait * 2, self.tg.retry_max_s)
        else:
            return
        self.connected.set()
        sending = asyncio.create_task(self.sender.run(self._stop))  # alerts go out even if polling cannot start
        try:
            await self.app.start()
            # bootstrap_retries=-1: deleteWebhook is retried until Telegram answers; later getUpdates errors
            # are retried by PTB's updater itself.
            await self.app.updater.start_polling(timeout=self.tg.poll_timeout_s, poll_interval=0.0,
                                                 allowed_updates=["message", "callback_query"], bootstrap_retries=-1)
        except TelegramError as exc:
            log.error("alerts: cannot poll Telegram for updates (%s): buttons and commands are off, alerts still "
                      "go out", exc)
        await sending

    def wake(self) -> None:
        """New rows are in the outbox (call from the service's loop; other threads use ServiceThread.wake)."""
        if self.sender is not None:
            self.sender.wake.set()

    async def _periodic(self) -> None:
        assert self._stop is not None
        while not self._stop.is_set():
            try:
                await asyncio.to_thread(self.tick)
                self.wake()
            except Exception:
                log.exception("alerts: the periodic tick failed; trying again next time")
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.tick_s)
            except TimeoutError:
                pass

    def tick(self) -> None:
        """Expire stale tickets, queue position events the brokers recorded, queue the daily report when due."""
        now = self.clock()
        answers.expire_tickets(self.store, now, initial_cash=self.initial_cash, lock=self.lock)
        outbox.enqueue(self.store, monitor.store_events(self.store, self.run_name, now), self.run_name, now)
        day = report_due(self.tg, now)
        if day is not None and not outbox.queued(self.store, f"report:{self.run_name}:{day}"):
            text = daily_report(self.store, self.run_name, self.risk, self.tg, now, self.settings)
            outbox.enqueue(self.store, [Alert(key=f"report:{self.run_name}:{day}", level="WARNING", kind="report",
                                              text=text, silent=True)], self.run_name, now)

    # --- updates ------------------------------------------------------------------------------

    async def _gatekeeper(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        chat = update.effective_chat
        if chat is None or str(chat.id) != self.tg.chat:
            self.ignored += 1
            user = update.effective_user
            log.warning("alerts: ignored an update from chat %s (user %s): not the configured chat",
                        chat.id if chat else "?", user.id if user else "?")
            raise ApplicationHandlerStop

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("alerts: handling an update failed: %s", context.error, exc_info=context.error)

    async def _reply(self, update: Update, text: str, **kw) -> None:
        if update.effective_message is not None:
            await update.effective_message.reply_text(text, parse_mode=ParseMode.HTML, **kw)

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        action, _, tid = (query.data or "").partition(":")
        try:
            t = await asyncio.to_thread(answers.ticket, self.store, tid)
            if action == SKIPPED:
                result = await asyncio.to_thread(self._apply, tid, "skipped", None)
                await query.answer(result.reply)
                await self._drop_buttons(query)
                await self._reply(update, escape(result.reply))
                return
            if action == EXECUTED:
                if t.status != "open":
                    raise answers.AnswerError(f"ticket {tid} is already {t.status}")
                if self.clock() > t.expires_ms:
                    raise answers.AnswerError(f"ticket {tid} expired: do not trade it")
                ask = (f"Reply to this message with your fill price for {escape(t.side)} {escape(t.symbol)} "
                       f"(ticket <code>{escape(tid)}</code>, entry {price(t.entry)})")
                what = "executed"
            elif action == CLOSED:
                if t.status != "executed":
                    raise answers.AnswerError(f"ticket {tid} has no open position ({t.status})")
                ask = (f"Reply to this message with your exit price for {escape(t.side)} {escape(t.symbol)} "
                       f"(ticket <code>{escape(tid)}</code>, stop {price(t.stop)}, target {price(t.target)})")
                what = "closed"
            else:
                raise answers.AnswerError(f"unknown button {query.data!r}")
            await query.answer("Reply with the price")
            prompt = await query.message.reply_text(
                ask, parse_mode=ParseMode.HTML,
                reply_markup=ForceReply(selective=True, input_field_placeholder="price, e.g. 91234.5"))
            await asyncio.to_thread(answers.set_prompt, self.store, tid, prompt.message_id, what)
        except answers.AnswerError as exc:
            await query.answer(str(exc)[:190], show_alert=True)

    async def _drop_buttons(self, query) -> None:
        try:
            await query.edit_message_reply_markup(reply_markup=None)
        except TelegramError as exc:  # cosmetic: the answer is recorded either way
            log.info("alerts: could not remove the buttons: %s", exc)

    def _apply(self, tid: str, action: str, value: float | None) -> answers.AnswerResult:
        return answers.apply_answer(self.store, tid, action, value, self.clock(), band=self.tg.fill_band,
                                    initial_cash=self.initial_cash, lock=self.lock)

    async def _on_reply(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        to = message.reply_to_message.message_id
        t = await asyncio.to_thread(answers.ticket_for_prompt, self.store, to)
        if t is None:
            await self._reply(update, "That is not a reply to a ticket or a price request: nothing recorded.")
            return
        action = t.prompt_action or ("executed" if t.status == "open" else "closed")
        try:
            value = answers.parse_price(message.text or "")
            result = await asyncio.to_thread(self._apply, t.ticket_id, action, value)
        except answers.AnswerError as exc:
            await self._reply(update, f"Not recorded: {escape(str(exc))}")
            return
        await self._reply(update, escape(result.reply))
        self.wake()

    async def _on_other(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._reply(update, "Commands: /status /positions /pause /resume /report. To record a trade, press "
                                  "Executed or Closed under its alert, then reply to the price request with the price.")

    # --- commands -----------------------------------------------------------------------------

    async def _cmd_status(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._reply(update, await asyncio.to_thread(self.status_text))

    async def _cmd_positions(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._reply(update, await asyncio.to_thread(self.positions_text))

    async def _cmd_pause(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user = update.effective_user
        who = f"telegram user {user.id if user else '?'}"
        await asyncio.to_thread(set_paused, self.store, self.run_name, True, who, self.clock())
        await self._reply(update, f"⏸ Run <code>{escape(self.run_name)}</code> paused: no new cycles until /resume. "
                                  "Open positions are still tracked.")

    async def _cmd_resume(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user = update.effective_user
        await asyncio.to_thread(set_paused, self.store, self.run_name, False,
                                f"telegram user {user.id if user else '?'}", self.clock())
        await self._reply(update, f"▶️ Run <code>{escape(self.run_name)}</code> resumed: cycles run at the next close.")

    async def _cmd_report(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        text = await asyncio.to_thread(daily_report, self.store, self.run_name, self.risk, self.tg, self.clock(),
                                       self.settings)
        await self._reply(update, text)

    def status_text(self) -> str:
        with self.store.session() as s:
            last = s.exec(select(CycleRow).where(CycleRow.run == self.run_name)
                          .order_by(CycleRow.decision_ms.desc()).limit(1)).first()
            account = None
            if last is not None:
                account = s.exec(select(AccountSnapshotRow).where(AccountSnapshotRow.cycle_id == last.cycle_id)
                                 .order_by(AccountSnapshotRow.id.desc()).limit(1)).first()
            tickets = s.exec(select(TicketRow).where(TicketRow.run == self.run_name, TicketRow.status == "open")).all()
        paused = is_paused(self.store, self.run_name)
        lines = [f"Run <code>{escape(self.run_name)}</code>: {'⏸ paused' if paused else '▶️ running'}"]
        if last is None:
            lines.append("No cycle yet.")
        else:
            lines.append(f"Last cycle {escape(last.cycle_id)} ({escape(last.status)})")
        if account is not None:
            lines.append(f"Equity {money(account.equity)} (cash {money(account.cash)}, floating "
                         f"{signed_money(account.floating_pnl)})")
        lines.append(self.positions_text(header_only=True))
        lines.append(f"Open tickets: {len(tickets)}  ·  alerts waiting to be sent: {outbox.pending_count(self.store)}")
        return "\n".join(lines)

    def positions_text(self, header_only: bool = False) -> str:
        with self.store.session() as s:
            rows = s.exec(select(PositionRow).join(OrderRow, OrderRow.client_order_id == PositionRow.client_order_id)
                          .join(CycleRow, CycleRow.cycle_id == OrderRow.cycle_id)
                          .where(CycleRow.run == self.run_name).order_by(PositionRow.opened_ms)).all()
        if header_only:
            return f"Open positions: {len(rows)}"
        if not rows:
            return "No open positions."
        lines = [f"<b>Open positions</b>: {len(rows)}"]
        for p in rows:
            sign = 1 if p.side == "LONG" else -1
            lines.append(f"• {escape(p.side)} {escape(p.symbol)} {price(p.quantity)} @ {price(p.entry)}, mark "
                         f"{price(p.mark)} ({signed_money(p.floating_pnl)}); stop {price(p.stop)} "
                         f"{sign * (p.mark - p.stop) / p.mark:.2%} away, target {price(p.target)}")
        return "\n".join(lines)


def build_alert_service(settings, store: Store, *, run: str | None = None, lock: threading.Lock | None = None,
                        **kw) -> AlertService | None:
    """The service for `settings` (agent.config.Settings), or None when Telegram is not configured."""
    tg: TelegramSettings = settings.telegram
    if not tg.configured:
        return None
    risk = settings.risk.with_environment(__import__("os").environ)
    return AlertService(tg, store, run or settings.cycle.run, risk=risk, initial_cash=settings.paper.initial_cash,
                        lock=lock, settings=settings, **kw)


class ServiceThread:
    """Runs an AlertService on its own event loop in a daemon thread (for the blocking `run` loop)."""

    def __init__(self, service: AlertService) -> None:
        self.service = service
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="telegram-alerts", daemon=True)

    def start(self) -> ServiceThread:
        self._thread.start()
        self._ready.wait(timeout=10)
        return self

    def _main(self) -> None:
        asyncio.run(self._amain())

    async def _amain(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        await self.service.start()
        self._ready.set()
        await self._done.wait()
        await self.service.stop()

    def wake(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.service.wake)

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._done is not None:
            self._loop.call_soon_threadsafe(self._done.set)
        self._thread.join(timeout)

