"""Pictor: `python main.py serve` (see README)."""

import sys

from appliance.cli import main

if __name__ == "__main__":
    sys.exit(main())
