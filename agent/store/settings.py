"""Where the store lives: a SQLite file in the data directory by default, or any SQLAlchemy URL."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

STORE_FILE = "signal_agent.sqlite"


class StoreSettings(BaseModel):
    """Config section `[store]`. `url` wins over the data directory (e.g. `postgresql+psycopg://...`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the store; None: SQLite file signal_agent.sqlite in the data directory.",
    )
    echo: bool = Field(default=False, description="Log every SQL statement (debugging).")

    def resolved_url(self, data_dir: Path) -> str:
        """The URL to open: the configured one, else the SQLite file under `data_dir`."""
        return self.url or f"sqlite:///{Path(data_dir) / STORE_FILE}"
