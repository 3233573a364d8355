"""`signal-agent signal SYMBOL`: one decision, from the feature snapshot to a validated Signal.

Prints the snapshot summary, the prompt's size against the 1,500-token budget, the signal and the
call record. The default provider is the heuristic one (no LLM, offline); every call is kept in
the call records under the configured data directory, which also answer a repeated request.
"""

from __future__ import annotations

import argparse
import json
import time

from agent.commands import UsageError
from agent.commands.analyze import parse_time
from agent.config import ConfigError, Settings, load_settings
from agent.llm.budget import CostBudget, utc_day_start
from agent.llm.prompt import TOKEN_BUDGET, PromptError, PromptTemplate
from agent.llm.providers import SPEC_HELP, make_provider, max_output_tokens
from agent.llm.records import CallRecords
from agent.llm.synthesis import Decision, ReplayMissError, Synthesiser
from agent.market import load_candles, parse_symbols
from agent.market.funding import load_funding
from agent.snapshot import build_snapshot
from theories.base import FitCache
from theories.candles import iso

NAME = "signal"
HELP = "one decision for a symbol: snapshot -> prompt -> provider -> validated signal"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Synthesise a validated trading signal for one symbol and print it with its call record."
    parser.add_argument("symbol", metavar="SYMBOL", help="BTC, ETH/USDT, ...")
    parser.add_argument("--provider", metavar="SPEC", help=f"{SPEC_HELP} (default: the config's, else heuristic)")
    parser.add_argument("--prompt", metavar="VARIANT", help="prompt variant in prompts/ (default: baseline)")
    parser.add_argument("--config", metavar="PATH", help="settings file (default: $SIGNAL_AGENT_CONFIG or ~/.config)")
    parser.add_argument("--data", metavar="PATH", help="a candle file or folder (default: the bundled sample)")
    parser.add_argument("--at", metavar="TIME", help="decide as of this time: only candles closed by then")
    parser.add_argument("--anonymise", action="store_true", help="the LLM sees no ticker, no dates, prices rebased")
    parser.add_argument("--no-cache", action="store_true", help="always call the provider, even for a recorded request")
    parser.add_argument("--json", action="store_true", help="print the decision as JSON")


def _settings(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def decide(args: argparse.Namespace, settings: Settings) -> tuple[Decision, str]:
    llm = settings.llm
    try:  # check the cheap arguments before the snapshot's model fits
        provider = make_provider(args.provider or llm.provider, llm)
        template = PromptTemplate.load(args.prompt or llm.prompt)
    except (ValueError, PromptError) as exc:
        raise UsageError(str(exc)) from None
    universe = load_candles(args.data, None)
    symbol = parse_symbols([args.symbol], universe)[0]
    at_ms = parse_time(args.at) if args.at else None
    if at_ms is not None and at_ms < int(universe[symbol].close_time[0]):
        raise UsageError(f"--at {iso(at_ms)} is before the first {symbol} candle closed")
    funding = load_funding() if args.data is None else {}
    snapshot = build_snapshot(symbol, universe, at_ms, cache=FitCache(), funding=funding)
    records = CallRecords(settings.records_path)
    now = _now_ms()
    budget = CostBudget(
        daily_usd=settings.budget.daily_usd,
        per_cycle_usd=settings.budget.per_cycle_usd,
        spent_today_usd=records.spent_since(utc_day_start(now)),
    )
    synth = Synthesiser(
        provider=provider,
        template=template,
        rules=settings.signal,
        price=settings.price_for(provider.name, provider.model),
        budget=budget,
        records=records,
        anonymise=args.anonymise or llm.anonymise,
        repair_retries=llm.repair_retries,
        cache=llm.cache and not args.no_cache,
        max_output_tokens=max_output_tokens(provider, llm),
    )
    try:
        decision = synth.decide(snapshot)
    except ReplayMissError as exc:
        raise UsageError(f"replay: {exc}") from None
    finally:
        records.close()
    return decision, snapshot.to_prompt_text()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def render_decision(decision: Decision, snapshot_text: str, records_path: str) -> str:
    s = decision.signal
    p = decision.prompt
    tokens = p.estimated_tokens
    reported = [c.tokens_in for c in decision.calls if c.attempt == 0 and c.tokens_in and not c.tokens_estimated]
    out = ["Snapshot", "--------", snapshot_text, ""]
    out.append(
        f"Prompt: {p.variant} v{p.version}, {len(p.system) + len(p.user)} characters, "
        f"~{tokens} tokens estimated (budget {TOKEN_BUDGET})"
        + (f", {reported[0]} reported by the provider" if reported else "")
        + f", {'anonymised' if p.anonymised else 'named'}, hash {p.sha256[:16]}"
    )
    out += ["", "Signal", "------"]
    if not decision.llm_used:
        out.append("(no LLM used: deterministic heuristic rules)")
    out.append(f"{s.symbol} {s.direction}  confidence {s.confidence:.2f}  horizon {s.horizon_hours:g} h")
    if s.direction != "HOLD":
        out.append(f"entry {s.entry:.6g}  stop {s.stop:.6g}  target {s.target:.6g}  reward:risk {s.reward_risk:.2f}")
    out.append(f"theories: {', '.join(s.theories) or 'none'}")
    out.append(f"reasoning: {s.reasoning}")
    out += ["", f"Calls (records: {records_path})", "-----"]
    for c in decision.calls:
        tok = "-" if c.tokens_in is None else f"{c.tokens_in}/{c.tokens_out}" + (" est." if c.tokens_estimated else "")
        out.append(
            f"#{c.record_id} attempt {c.attempt} {c.provider}:{c.model} -> {c.outcome}"
            + (" (cache hit, $0)" if c.cache_hit else "")
            + f"; tokens in/out {tok}; {c.latency_ms:.0f} ms; ${c.cost_usd:.6f}"
            + (f"; {c.error}" if c.error else "")
        )
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    decision, snapshot_text = decide(args, settings)
    if args.json:
        print(json.dumps(decision.model_dump(mode="json"), indent=2, sort_keys=True))
    else:
        print(render_decision(decision, snapshot_text, str(settings.records_path)))
    return 0
