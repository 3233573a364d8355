"""LLM synthesis: providers behind one interface, the call with its repair retry, records and budget."""
