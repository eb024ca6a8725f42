"""``python -m etl``: the command line."""

from etl.cli import program

raise SystemExit(program())
