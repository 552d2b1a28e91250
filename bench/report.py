"""Percentiles, the table and the targets (met / not met), from the results of one run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Report", "Target", "percentile"]


def percentile(values: Sequence[int | float], p: float) -> float:
    """Nearest-rank percentile (p in 0-100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return float(ordered[rank - 1])


def _rate(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.0f}"


def _ms(ns: float) -> str:
    if math.isnan(ns):
        return "-"
    ms = ns / 1e6
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def _pair(values: Sequence[int]) -> str:
    if not values:
        return "-"
    return f"{_ms(percentile(values, 50))} / {_ms(percentile(values, 99))}"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return None
    return a / b


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


@dataclass
class Target:
    """One target of an issue, judged; or, with ``met`` None and no goal, a figure for info."""

    text: str
    measured: float | None
    goal: str
    met: bool | None
    note: str = ""

    @property
    def verdict(self) -> str:
        """``met``, ``not met``, ``not judged`` (a figure is missing) or ``info``."""
        if not self.goal:
            return "info"
        return "not judged" if self.met is None else "met" if self.met else "not met"


COLUMNS = ("measurement", "ceiling", "RunGuard", "etcd", "Redis", "RG/ceiling", "RG/etcd")


@dataclass
class Report:
    """Everything measured in one run, and how it is shown."""

    header: list[str] = field(default_factory=list)
    rows: list[tuple[str, ...]] = field(default_factory=list)
    footnotes: list[str] = field(default_factory=list)
    targets: list[tuple[str, list[Target]]] = field(default_factory=list)
    """Groups of targets, each under its heading."""
    notes: list[str] = field(default_factory=list)

    def row(
        self,
        name: str,
        *,
        ceiling: str = "",
        runguard: str = "",
        etcd: str = "",
        redis: str = "",
        vs_ceiling: float | None = None,
        vs_etcd: float | None = None,
    ) -> None:
        """Add a row of the table."""
        self.rows.append(
            (
                name,
                ceiling,
                runguard,
                etcd,
                redis,
                "" if vs_ceiling is None else _fmt_ratio(vs_ceiling),
                "" if vs_etcd is None else _fmt_ratio(vs_etcd),
            )
        )

    def render(self) -> str:
        """The whole report as text."""
        widths = [max(len(r[i]) for r in [COLUMNS, *self.rows]) for i in range(len(COLUMNS))]
        lines = [*self.header, ""]

        def line(cells: Sequence[str]) -> str:
            first = cells[0].ljust(widths[0])
            rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
            return "  ".join([first, *rest]).rstrip()

        lines.append(line(COLUMNS))
        lines.append(line(["-" * w for w in widths]))
        lines.extend(line(r) for r in self.rows)
        lines.extend(self.footnotes)
        for heading, targets in self.targets:
            lines.append("")
            lines.append(heading)
            for target in targets:
                measured = "-" if target.measured is None else f"{target.measured:.2f}"
                goal = f" (target {target.goal})" if target.goal else ""
                lines.append(f"  [{target.verdict:>10}] {target.text}: {measured}{goal}")
                if target.note:
                    lines.append(f"               {target.note}")
        if self.notes:
            lines.append("")
            lines.extend(self.notes)
        return "\n".join(lines)


def rate_text(value: float | None) -> str:
    """A rate, or '-'."""
    return _rate(value)


def us_text(value: float | None) -> str:
    """Microseconds, or '-'."""
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def kib_text(value: float | None) -> str:
    """KiB with one decimal, or '-'."""
    return "-" if value is None else f"{value:.1f}"


def rate_of(result: Any) -> float | None:
    """A load result's cycles per second, or None when it did not run."""
    return None if result is None else float(result.rate)


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing."""
    return _ratio(a, b)


def rate_cell(result: Any) -> str:
    """A load result as a rate cell."""
    return _rate(rate_of(result)) if result is not None else "-"


def pair_cell(values: Sequence[int] | None) -> str:
    """p50 / p99 in milliseconds."""
    return "-" if values is None else _pair(values)
