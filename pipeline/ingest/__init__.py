"""Turning gateway logs into redacted `GatewayEvent`s (and rejects with reasons)."""
