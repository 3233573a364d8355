"""Historical replay and honest comparison of variants (issue: evals)."""
