"""Pure analysis of order books and trades, and the live L2/trade stream clients (issue: order flow)."""
