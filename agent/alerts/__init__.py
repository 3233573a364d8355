"""Telegram alerts for manual execution: an outbox in the store, one sender, tickets with buttons, commands.

- `outbox_rows(event, settings)`: the alert rows of one decision, for `CycleDeps.decision_rows`,
  so an alert exists exactly when its decision does (same transaction).
- `AlertService`: the asyncio service (outbox sender, bot updates, daily report, expiry sweep),
  built by `build_alert_service(settings, store, ...)`, None when Telegram is not configured.
- `control.is_paused(store, run)`: set by /pause and /resume; checked before every cycle.

Names are imported lazily: `agent.config` imports `agent.alerts.settings`, and must not pull in
python-telegram-bot or the cycle with it.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "outbox_rows": "agent.alerts.outbox",
    "enqueue": "agent.alerts.outbox",
    "AlertService": "agent.alerts.service",
    "build_alert_service": "agent.alerts.service",
    "ServiceThread": "agent.alerts.service",
    "is_paused": "agent.alerts.control",
    "set_paused": "agent.alerts.control",
    "TelegramSettings": "agent.alerts.settings",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'agent.alerts' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
