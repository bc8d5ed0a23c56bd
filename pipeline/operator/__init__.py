"""Operator actions: overrides, feedback and their audit trail (alerts of kind `operator`)."""
