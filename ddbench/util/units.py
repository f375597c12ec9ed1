"""Numbers as people read them: bytes, durations, accuracies (no torch, so any command may use them)."""

from __future__ import annotations

import math


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_bytes(n: float | None) -> str:
    """``1.50 GiB``; ``—`` for unknown."""
    if _missing(n):
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def format_seconds(seconds: float | None) -> str:
    """``0.42 s``, ``12.3 s``, ``4m05s``, ``1h02m``; ``—`` for unknown."""
    if _missing(seconds) or not math.isfinite(seconds):
        return "—"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def format_percent(fraction: float | None, digits: int = 1) -> str:
    """A stored accuracy (a fraction) as a percentage without the sign: ``0.6123`` → ``61.2``."""
    return "—" if _missing(fraction) else f"{100 * fraction:.{digits}f}"


__all__ = ["format_bytes", "format_seconds", "format_percent"]
