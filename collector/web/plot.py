"""Detections per day per class as SVG geometry, computed here so the template only draws (no JavaScript)."""

from __future__ import annotations

from dataclasses import dataclass

from collector.queries import DailyCounts

#: Colour-blind-safe (Okabe-Ito) colours, one per series; classes beyond them are summed as "other".
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000")
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 12, 12, 28


@dataclass(frozen=True, slots=True)
class Dot:
    """One day's value of a series: where it is drawn and what its tooltip says."""

    x: float
    y: float
    day: str
    value: int


@dataclass(frozen=True, slots=True)
class Series:
    """One class: its label, colour, total, polyline points and dots."""

    label: str
    colour: str
    total: int
    points: str
    dots: list[Dot]


@dataclass(frozen=True, slots=True)
class Plot:
    """A line plot of counts per day, sized in SVG user units."""

    width: int
    height: int
    left: int
    top: int
    bottom: int
    right: int
    series: list[Series]
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]


def build(counts: DailyCounts, *, width: int = 760, height: int = 260) -> Plot:
    """The plot of ``counts``: one line per class (the largest first), axes with a few round ticks."""
    items = list(counts.series.items())
    if len(items) > len(PALETTE):
        keep, rest = items[:len(PALETTE) - 1], items[len(PALETTE) - 1:]
        items = [*keep, ("other", [sum(v) for v in zip(*(values for _l, values in rest), strict=True)])]
    top_value = max([max(values) for _l, values in items] + [1])
    step = _nice_step(top_value)
    y_max = step * -(-top_value // step)
    inner_w, inner_h = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM
    n = len(counts.days)

    def x_of(i: int) -> float:
        return round(_LEFT + (inner_w * i / (n - 1) if n > 1 else inner_w / 2), 1)

    def y_of(v: int) -> float:
        return round(_TOP + inner_h * (1 - v / y_max), 1)

    series = []
    for (label, values), colour in zip(items, PALETTE, strict=False):
        dots = [Dot(x_of(i), y_of(v), counts.days[i], v) for i, v in enumerate(values)]
        series.append(Series(label, colour, sum(values), " ".join(f"{d.x},{d.y}" for d in dots), dots))
    every = max(1, -(-n // 8))
    x_ticks = [(x_of(i), counts.days[i][5:]) for i in range(0, n, every)]
    y_ticks = [(y_of(v), str(v)) for v in range(0, y_max + 1, step)]
    return Plot(width, height, _LEFT, _TOP, _BOTTOM, _RIGHT, series, x_ticks, y_ticks)


def _nice_step(top: int) -> int:
    """A round tick step (1, 2, 5 x 10^k) giving at most five ticks up to ``top``."""
    scale = 1
    while True:
        for base in (1, 2, 5):
            if top / (base * scale) <= 5:
                return base * scale
        scale *= 10
