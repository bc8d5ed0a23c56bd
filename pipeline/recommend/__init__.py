"""Rate-limit recommendations from learned baselines, rendered for an operator to review."""
