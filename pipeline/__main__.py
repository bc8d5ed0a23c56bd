"""`python -m pipeline` is the `gatewatch` command."""

from pipeline.cli import app

app(prog_name="gatewatch")
