"""The store (sqlmodel): cycles, decisions and everything they caused, SQLite by default, PostgreSQL by URL."""

from agent.store.settings import STORE_FILE, StoreSettings
from agent.store.store import RowValues, Store, StoreError, order_row

__all__ = ["STORE_FILE", "RowValues", "Store", "StoreError", "StoreSettings", "order_row"]
