"""Deterministic sizing and prop-firm rules: the RiskGate (issue: risk gate)."""
