"""The orchestrator: market data, feature snapshots, the CLI (and, later, LLM, cycle, brokers)."""
