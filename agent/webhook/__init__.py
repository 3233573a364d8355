"""Signed TradingView alerts in, one triggered cycle per alert out (`signal-agent serve`).

The package is split by role:
- `settings`: the `[webhook]` config section (pydantic only: the config loader imports it);
- `theory`: the alert as the `tradingview` theory result of a snapshot (no web code: the snapshot
  loader imports it to read stored snapshots back);
- `payload`: the request body's schema; `signature`: HMAC verification and the bounded body read;
- `intake`: the checks that need the store (timestamp, replay, allow-list, cooldown) and the rows;
- `source`: the snapshot source that attaches the alert; `cycles`: the alert's and the scheduled
  cycles, and their decision times; `worker`: the one thread that runs them;
- `app`: the FastAPI application; `server`: uvicorn in-process; `service`: all of it assembled.
This module imports none of them, so importing `agent.webhook.theory` stays light.
"""
