"""``python -m etl``: the command line."""

from etl.cli import main

raise SystemExit(main())
