"""`python tests/bench/ops_server.py [--no-counting] serve ...`: the appliance's own command
line, for the operations bench. With `--no-counting` it serves without fetch counting (and
the bench gives it no --metrics-port): the baseline that counting is measured against. The
appliance itself has no switch for this; counting is always on there."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from appliance import app, cli

if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--no-counting"]:
        args = args[1:]
        # cli._serve imports start_appliance when it runs: it gets this one.
        app.start_appliance = partial(app.start_appliance, count_fetches=False)  # type: ignore[assignment]
    sys.exit(cli.main(args))
