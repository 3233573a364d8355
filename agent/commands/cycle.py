"""`signal-agent cycle`: one cycle now, printed as a table of decisions.

On a fresh machine with no configuration it runs on the bundled sample candles with the
heuristic provider (no LLM) and the paper broker, as of the last candle close in the data, and
stores everything in the data directory's SQLite store. Running it again at the same decision
time resumes (or re-reads) that cycle; `--at` picks another time (only candles closed by then
are used), and successive times advance the same paper account.

`--live` trades through the live (ccxt) broker instead: only when the config says
`[live] enabled = true` as well, on the exchange's sandbox unless the config says
`sandbox = false` and `--production` is given; keys come from the environment or `.env`.
A live run's cycles are filed under the run name "live" unless one is chosen.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from agent.alerts.answers import expire_tickets
from agent.alerts.monitor import cycle_events, manual_position_events, store_events
from agent.alerts.outbox import enqueue, outbox_rows
from agent.brokers.base import Broker, BrokerError
from agent.brokers.manual import ManualBroker
from agent.brokers.paper import PaperBroker, PaperSettings
from agent.commands import UsageError
from agent.commands.analyze import parse_time
from agent.config import ConfigError, Settings, load_settings
from agent.cycle import CycleDeps, CycleError, CycleResult, CycleSettings, FileMarketData, MarketData, run_cycle
from agent.llm.base import Provider
from agent.llm.budget import CostBudget, utc_day_start
from agent.llm.prompt import PromptError, PromptTemplate
from agent.llm.providers import SPEC_HELP, make_provider, max_output_tokens
from agent.llm.records import CallRecords
from agent.llm.synthesis import ReplayMissError, Synthesiser
from agent.market import parse_symbols
from agent.store import Store, StoreError, StoreSettings
from agent.store.tables import PositionRow
from risk import RiskConfig, RiskGate
from theories.candles import CandleDataError, iso

NAME = "cycle"
HELP = "one decision cycle now: every symbol -> snapshot -> signal -> risk gate -> paper broker -> store"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run one decision cycle over the universe and print the decisions. Without configuration: the bundled "
        "sample, the heuristic provider (no LLM) and the paper broker, as of the last candle in the data."
    )
    parser.add_argument("--symbols", metavar="LIST", help="comma-separated symbols (default: all in the data)")
    parser.add_argument("--provider", metavar="SPEC", help=f"{SPEC_HELP} (default: the config's, else heuristic)")
    parser.add_argument("--prompt", metavar="VARIANT", help="prompt variant in prompts/ (default: baseline)")
    parser.add_argument("--config", metavar="PATH", help="settings file (default: $SIGNAL_AGENT_CONFIG or ~/.config)")
    parser.add_argument("--data", metavar="PATH", help="a folder of candle files (default: the bundled sample)")
    parser.add_argument("--at", metavar="TIME", help="decision time (default: the last candle close in the data)")
    parser.add_argument("--store", metavar="URL", help="store URL (default: SQLite in the data directory)")
    parser.add_argument("--run", metavar="NAME", help="run name: its cycles share one paper account (default: paper)")
    parser.add_argument("--json", action="store_true", help="print the cycle result as JSON")
    add_live_arguments(parser)
    parser.add_argument("--manual", action="store_true",
                        help="you execute the trades: approved ones become Telegram tickets (the manual broker); "
                             "run name 'manual' unless one is chosen")


def add_live_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--live", action="store_true",
                        help="trade through the live (ccxt) broker; needs `enabled = true` in [live] of the config")
    parser.add_argument("--production", action="store_true",
                        help="with --live: trade real funds (the config must also say `sandbox = false`)")


def live_broker(args: argparse.Namespace, settings: Settings) -> Broker | None:
    """The live broker when the command line asks for it (None otherwise); refusals become UsageError.

    ccxt is imported here, not at module level: it costs about 2 s that paper cycles never pay.
    """
    live, production = getattr(args, "live", False), getattr(args, "production", False)
    if not live and not production:
        return None
    from agent.brokers.live import LiveBroker
    from agent.brokers.live_exchange import LiveDisabledError, connect_exchange, load_credentials, require_live_mode

    try:
        mode = require_live_mode(settings.live, live, production)
        credentials = load_credentials()
        return LiveBroker(connect_exchange(settings.live, credentials, mode), settings.live)
    except (LiveDisabledError, BrokerError) as exc:
        raise UsageError(f"live trading refused: {exc}") from None


def run_name(args: argparse.Namespace, configured: CycleSettings) -> str:
    """--run, else the config's; a live run is filed under "live" unless a name was chosen."""
    if args.run:
        return args.run
    if getattr(args, "live", False) and "run" not in configured.model_fields_set:
        return "live"
    if getattr(args, "manual", False) and "run" not in configured.model_fields_set:
        return "manual"
    return configured.run


def last_close(data: MarketData, symbols: list[str], at_ms: int = 2**62) -> int | None:
    """The latest candle close at or before `at_ms` over `symbols` (a symbol whose file is bad is ignored)."""
    closes = []
    for s in symbols:
        try:
            closes.append(data.candles(s, at_ms).last_close_time)
        except (CandleDataError, OSError, ValueError):  # a bad file is the cycle's to report, per symbol
            continue
    return max(closes) if closes else None


def synthesiser(settings: Settings, provider: Provider, template: PromptTemplate, records: CallRecords,
                now_ms: int) -> Synthesiser:
    """The synthesiser of a live cycle: the configured signal rules, price, repair and caching, and a
    budget that counts what the records say was spent since `now_ms`'s UTC midnight."""
    llm, budget = settings.llm, settings.budget
    return Synthesiser(
        provider=provider, template=template, rules=settings.signal,
        price=settings.price_for(provider.name, provider.model),
        budget=CostBudget(daily_usd=budget.daily_usd, per_cycle_usd=budget.per_cycle_usd,
                          spent_today_usd=records.spent_since(utc_day_start(now_ms))),
        records=records, anonymise=llm.anonymise, repair_retries=llm.repair_retries, cache=llm.cache,
        max_output_tokens=max_output_tokens(provider, llm),
    )


def _settings(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def execute(
    args: argparse.Namespace,
    settings: Settings,
    *,
    at_ms: int | None = None,
    broker: Broker | None = None,
    data: MarketData | None = None,
) -> CycleResult:
    """One cycle as the command line asks. `signal-agent run` passes the clock's time (`at_ms`: the
    decision is the last candle close at or before it), its long-lived broker and its data source."""
    llm = settings.llm
    # sections agent.config nests as [cycle], [paper], [store], [risk]; the defaults until it does
    configured: CycleSettings = getattr(settings, "cycle", None) or CycleSettings()
    paper: PaperSettings = getattr(settings, "paper", None) or PaperSettings()
    store_settings: StoreSettings = getattr(settings, "store", None) or StoreSettings()
    risk: RiskConfig = getattr(settings, "risk", None) or RiskConfig()
    try:
        provider = make_provider(args.provider or llm.provider, llm)
        template = PromptTemplate.load(args.prompt or llm.prompt)
        cycle_settings = CycleSettings.model_validate({**configured.model_dump(), "run": run_name(args, configured)})
    except (ValueError, PromptError) as exc:
        raise UsageError(str(exc)) from None
    if data is None:
        data = FileMarketData(args.data)
    wanted = args.symbols.split(",") if args.symbols else list(cycle_settings.symbols)
    symbols = parse_symbols(wanted, data.symbols()) if wanted else data.symbols()
    cycle_settings = cycle_settings.model_copy(update={"symbols": tuple(symbols)})
    if args.at and at_ms is None:
        decision_ms = parse_time(args.at)
    else:  # the last close any symbol reached: bundled data ends in the past, so "now" would be stale
        found = last_close(data, symbols, 2**62 if at_ms is None else at_ms)
        if found is None:
            when = "" if at_ms is None else f" closed by {iso(at_ms)}"
            raise UsageError(f"no symbol has readable candles{when}")
        decision_ms = found
    manual = getattr(args, "manual", False)
    if manual and (getattr(args, "live", False) or getattr(args, "production", False)):
        raise UsageError("--manual and --live exclude each other: a person or the exchange executes, not both")
    if broker is None:
        broker = ManualBroker(paper.initial_cash) if manual else live_broker(args, settings)
    # SIGNAL_AGENT_KILL_SWITCH can only switch trading off; sized with the fee the paper broker will charge
    risk = risk.with_environment(os.environ).sized_with_fee(paper.taker_fee)
    try:
        store = Store(args.store or store_settings.resolved_url(settings.data_dir), echo=store_settings.echo)
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    records = CallRecords(settings.records_path)
    synth = synthesiser(settings, provider, template, records, _wall_ms())
    telegram = getattr(settings, "telegram", None)
    alerts_on = telegram is not None and telegram.configured
    deps = CycleDeps(store=store, broker=broker or PaperBroker(paper), synthesiser=synth, gate=RiskGate(risk),
                     data=data, settings=cycle_settings,
                     # the ticket and the decision's alerts commit in the decision's own transaction
                     decision_rows=(lambda event: outbox_rows(event, telegram)) if alerts_on else None)
    try:
        if alerts_on:  # unanswered tickets past their expiry: withdraw their orders before deciding anew
            expire_tickets(store, decision_ms, initial_cash=paper.initial_cash)
        result = run_cycle(decision_ms, deps)
        if alerts_on:
            queue_cycle_alerts(store, result, data, risk, telegram)
        return result
    except ReplayMissError as exc:
        raise UsageError(f"replay: {exc}") from None
    except (CycleError, BrokerError) as exc:
        raise UsageError(str(exc)) from None
    finally:
        records.close()
        store.close()


def queue_cycle_alerts(store: Store, result: CycleResult, data: MarketData, risk: RiskConfig, telegram) -> int:
    """Queue what the cycle's result and the store now say (position events, mismatches, stale data,
    limits). Never fails the cycle: an alert that cannot be queued is reported on stderr."""
    try:
        candles = {}
        for symbol in {p.symbol for p in store.rows(PositionRow)}:
            try:
                candles[symbol] = data.candles(symbol, result.decision_ms)
            except (CandleDataError, OSError, ValueError):
                continue
        found = [*store_events(store, result.run, result.decision_ms),
                 *manual_position_events(store, result.run, candles, result.decision_ms),
                 *cycle_events(result, store, risk, telegram.near_limit)]
        return enqueue(store, found, result.run, _wall_ms())
    except Exception as exc:  # the decisions are stored; an alert problem must not undo the cycle's success
        print(f"signal-agent: could not queue the cycle's alerts: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 0


def flush_alerts(args: argparse.Namespace, settings: Settings, timeout_s: float = 10.0) -> str | None:
    """Send the queued alerts for up to `timeout_s` (None when Telegram is not configured)."""
    telegram = getattr(settings, "telegram", None)
    if telegram is None or not telegram.configured:
        return None
    from agent.alerts.sender import flush

    store = Store(args.store or settings.store.resolved_url(settings.data_dir))
    try:
        return flush(telegram, store, run_name(args, settings.cycle), timeout_s).line()
    finally:
        store.close()


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.6g}"


def render(result: CycleResult, broker: str = "paper") -> str:
    a = result.account
    out = [
        f"Cycle {result.cycle_id} (decision time {iso(result.decision_ms)}, attempt {result.attempt})",
        f"{'symbol':<10} {'last':>10} {'regime':<16} {'signal':<6} {'conf':>5} {'entry':>10} {'stop':>10} "
        f"{'target':>10} {'gate':<9} {'size':>12} {'outcome':<12}",
    ]
    for r in result.results:
        out.append(
            f"{r.symbol:<10} {_num(r.last_price):>10} {(r.regime or '-'):<16} {(r.direction or '-'):<6} "
            f"{('-' if r.confidence is None else f'{r.confidence:.2f}'):>5} {_num(r.entry):>10} {_num(r.stop):>10} "
            f"{_num(r.target):>10} {(r.gate or '-'):<9} {_num(r.quantity):>12} {r.outcome:<12}"
            + (" (decided by an earlier attempt)" if r.resumed else "")
        )
        if r.highlights:
            out.append(f"    snapshot: {r.highlights}")
        if r.outcome in ("skipped", "error", "hold", "order_failed"):
            out.append(f"    why: {r.reason}")
        for reason in r.reasons:  # a refusal's every rule, or everything that shaped the size
            out.append(f"    gate [{reason.rule}/{reason.code}] {reason.message}")
        if r.client_order_id:
            out.append(f"    order {r.client_order_id}: {r.order_status or 'recorded'}; notional {_num(r.notional)}")
    out.append(
        f"{broker.capitalize()} account: equity {a.equity:.2f} = cash {a.cash:.2f} + positions {a.positions_value:.2f} "
        f"(balance {a.balance:.2f}, floating {a.floating_pnl:+.2f}); fills since the last cycle {result.fills}, "
        f"closed trades {result.closed_trades}"
    )
    t = result.timings
    out.append("Time: " + ", ".join(f"{k} {v:.3f}s" for k, v in t.items()) + f" (LLM calls {result.llm_seconds:.3f}s)")
    out.append(f"Store: {result.store}")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    result = execute(args, settings)
    if args.json:
        print(json.dumps(result.model_dump(mode="json"), indent=2, sort_keys=True))
    else:
        print(render(result, "live" if args.live else "manual" if getattr(args, "manual", False) else "paper"))
    sent = flush_alerts(args, settings)
    if sent is not None:
        print(sent, file=sys.stderr if args.json else sys.stdout)
    return 0
