"""`make soak`: python -m tests.soak. Minutes of mixed load against a subprocess server.

SOAK_SECONDS (default 180), SOAK_CLIENTS (default 32), SOAK_WARMUP (default: a sixth of the
run, at least 10 s), SOAK_MAX_GROWTH_MB (default 50), SOAK_SEED. Prints a summary; exits 1 on
any 5xx, connection error, unexpected answer, write not read back, or RSS growth after
warm-up beyond the limit.
"""

from __future__ import annotations

import os
import sys

from tests.soak import run_soak, temporary_dir


def _env(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def main() -> int:
    seconds = _env("SOAK_SECONDS", 180)
    clients = int(_env("SOAK_CLIENTS", 32))
    warmup = _env("SOAK_WARMUP", max(10.0, seconds / 6))
    max_growth = _env("SOAK_MAX_GROWTH_MB", 50)
    seed_raw = os.environ.get("SOAK_SEED", "").strip()
    seed = int(seed_raw) if seed_raw else None
    print(f"soak: {seconds:.0f} s with {clients} clients (warm-up {warmup:.0f} s)", flush=True)
    with temporary_dir() as tmp:
        result = run_soak(
            tmp / "data",
            tmp / "server.log",
            seconds=seconds,
            clients=clients,
            warmup=warmup,
            seed=seed,
            progress=lambda line: print("  " + line, flush=True),
        )
        print(result.summary())
        failures = result.failures(max_growth)
        if failures:
            print("SOAK FAILED:")
            for failure in failures:
                print("  - " + failure)
            log = (tmp / "server.log").read_text(errors="replace")
            print("server log (last 40 lines):")
            print("\n".join(log.splitlines()[-40:]))
            return 1
    print("soak passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
