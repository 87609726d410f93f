"""The soak (tests/soak, `make soak`) for a few seconds inside `make test`: dozens of
keep-alive clients mixing uploads, lists, patches, deletes and public reads against a
subprocess server, with no 5xx, no connection error, no unexpected answer, and every
acknowledged write read back afterwards."""

from __future__ import annotations

from pathlib import Path

from tests.soak import run_soak


def test_short_soak(tmp_path: Path) -> None:
    result = run_soak(tmp_path / "data", tmp_path / "server.log", seconds=15, clients=24, warmup=5)
    print(result.summary())
    assert result.failures(max_growth_mib=None) == [], result.summary()
    # It did real work: every kind of request, and writes to read back.
    assert set(result.stats.requests) >= {
        "upload",
        "list",
        "folders",
        "patch",
        "delete",
        "read",
        "conditional",
        "range",
    }
    assert result.total_requests > 1000, result.summary()
    assert result.acknowledged > 50
    assert len(result.samples) >= 10  # RSS sampled every second
