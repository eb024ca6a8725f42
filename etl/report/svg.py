"""Inline SVG charts, drawn by hand: the shapes the report draws with.

Three shapes cover the report: vertical columns (grouped, diverging around zero, or coloured per
bar), horizontal bars for a ranking, and a histogram over log2 bins. Each returns one ``<svg>``
element with a viewBox, so it scales with its card and needs no script, font or network. Text
styles come from the report's stylesheet through class names. Every bar carries
``data-label``/``data-value`` and a ``<title>`` tooltip. Knows nothing of the report's data
(etl.report.charts draws the report's charts with these).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 560  # default viewBox width: about the pixels of a half-width card, so text keeps its size
CHAR = 0.6  # average glyph width per font-size unit, to budget room for labels
TICK_SIZE, VALUE_SIZE = 11, 10.5

Format = Callable[[float], str]


@dataclass(frozen=True)
class Series:
    """One named row of values, drawn in one colour."""

    name: str
    values: Sequence[float]
    color: str


def count(value: float) -> str:
    """An integer count with thousands separators; large values shortened (12.3k, 4.5M)."""
    magnitude = abs(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e4, "k")):
        if magnitude >= limit:
            return f"{value / limit:.3g}{suffix}".replace("-", "\u2212")
    return f"{round(value):,}".replace("-", "\u2212")


def duration(seconds: float) -> str:
    """A duration in the largest unit that keeps it readable: 42 s, 3.5 min, 2.1 h."""
    if seconds < 90:
        return f"{seconds:.3g} s"
    if seconds < 5400:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def nice_ticks(lo: float, hi: float, target: int = 5, integer: bool = True) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) covering [lo, hi], zero
    included when the range crosses it."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / target
    power = 10 ** math.floor(math.log10(raw))
    steps = (1, 2, 5, 10) if integer and power < 10 else (1, 2, 2.5, 5, 10)
    step = next(m * power for m in steps if m * power >= raw)
    if integer:
        step = max(step, 1)
    first, last = math.floor(lo / step), math.ceil(hi / step)
    return [k * step for k in range(first, last + 1)]


def duration_ticks(hi: float) -> tuple[list[float], str, float]:
    """Ticks for a duration axis up to ``hi`` seconds: (ticks in seconds, unit name, unit)."""
    unit, name = (1.0, "s") if hi < 120 else (60.0, "min") if hi < 7200 else (3600.0, "h")
    return [t * unit for t in nice_ticks(0, hi / unit, integer=False)], name, unit


def _attrs(**values: object) -> str:
    return " ".join(
        f'{k.rstrip("_").replace("_", "-")}="{escape(str(v))}"' for k, v in values.items()
    )


def _text(x: float, y: float, text: str, cls: str, anchor: str = "middle", **extra: object) -> str:
    place = _attrs(x=f"{x:.1f}", y=f"{y:.1f}", class_=cls, text_anchor=anchor, **extra)
    return f"<text {place}>{escape(text)}</text>"


def _bar(
    x: float, y: float, w: float, h: float, color: str, label: str, value: float, tip: str
) -> str:
    box = _attrs(x=f"{x:.1f}", y=f"{y:.1f}", width=f"{max(w, 0):.1f}", height=f"{max(h, 0):.1f}")
    return (
        f'<rect class="bar" {box} rx="2" fill="{escape(color)}" '
        f"{_attrs(data_label=label, data_value=f'{value:g}')}><title>{escape(tip)}</title></rect>"
    )


def _svg(chart_id: str, width: float, height: float, label: str, body: list[str]) -> str:
    head = _attrs(
        class_="chart",
        id=f"{chart_id}-svg",
        viewBox=f"0 0 {width:.0f} {height:.0f}",
        role="img",
        aria_label=label,
    )
    return f"<svg {head}>" + "".join(body) + "</svg>"


def _legend(series: Sequence[tuple[str, str]], right: float, y: float) -> list[str]:
    """Swatches and names, right-aligned at ``right``."""
    parts: list[str] = []
    x = right
    for name, color in reversed(series):
        x -= len(name) * TICK_SIZE * CHAR
        parts.append(_text(x, y + 4, name, "legend", anchor="start"))
        x -= 16
        parts.append(
            f'<rect x="{x:.1f}" y="{y - 5:.1f}" width="11" height="11" rx="2" fill="{color}"/>'
        )
        x -= 14
    return parts


def _y_axis(
    ticks: Sequence[float],
    fmt: Format,
    scale: Callable[[float], float],
    left: float,
    right: float,
    label: str,
    top: float,
    bottom: float,
) -> list[str]:
    parts = []
    for t in ticks:
        y = scale(t)
        cls = "zero" if t == 0 else "grid"
        parts.append(
            f'<line class="{cls}" x1="{left:.1f}" x2="{right:.1f}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        parts.append(_text(left - 8, y + 4, fmt(t), "tick", anchor="end"))
    middle = (top + bottom) / 2
    parts.append(_text(14, middle, label, "axis-label", transform=f"rotate(-90 14 {middle:.1f})"))
    return parts


def _break_mark(x: float, y: float, w: float) -> str:
    """Two slanted cuts across a bar: it continues beyond the axis."""
    return "".join(
        f'<path class="cut" d="M{x - 2:.1f} {y + dy + 3:.1f} L{x + w + 2:.1f} {y + dy - 3:.1f}"/>'
        for dy in (0, 5)
    )


def _label_room(texts: Sequence[str], size: float = TICK_SIZE) -> float:
    return max((len(t) for t in texts), default=1) * size * CHAR


def columns(
    chart_id: str,
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    x_label: str,
    y_label: str,
    tip: Callable[[int, Series], str],
    bar_colors: Sequence[str] | None = None,
    legend: Sequence[tuple[str, str]] | None = None,
    y_ticks: tuple[list[float], Format] | None = None,
    value_format: Format = count,
    diverging: bool = False,
    width: int = WIDTH,
    height: int = 300,
) -> str:
    """Vertical bars per category, one per series side by side; negative values hang below the
    zero line. ``diverging``: the series (one positive, one negative) share each slot, one above
    and one below zero. ``bar_colors`` colours a single series bar by bar (``legend`` explains).
    ``y_ticks`` fixes the axis; a value beyond it is drawn cut, with a break mark and its value."""
    values = [v for s in series for v in s.values]
    lo, hi = min(0.0, *values), max(0.0, *values)
    ticks, tick_format = y_ticks or (nice_ticks(lo, hi), count)
    lo, hi = ticks[0], ticks[-1]
    top = 40 if (legend or len(series) > 1) else 20
    left = 34 + _label_room([tick_format(t) for t in ticks])
    right, bottom = width - 12, height - 46
    plot_w = right - left

    def y_of(v: float) -> float:
        return bottom - (v - lo) / (hi - lo) * (bottom - top)

    parts = _y_axis(ticks, tick_format, y_of, left, right, y_label, top, bottom)
    n = len(categories)
    band = plot_w / n
    slots = 1 if diverging else len(series)
    bar_w = min(band * 0.78 / slots, 46.0)
    group_w = bar_w * slots
    show_values = n * slots <= 24
    for i, category in enumerate(categories):
        x0 = left + i * band + (band - group_w) / 2
        for k, s in enumerate(series):
            j, v = (0 if diverging else k), s.values[i]
            color = bar_colors[i] if bar_colors else s.color
            y0, y1 = sorted((y_of(0), y_of(min(max(v, lo), hi))))
            x = x0 + j * bar_w + 0.5
            parts.append(_bar(x, y0, bar_w - 1, y1 - y0, color, category, v, tip(i, s)))
            if v > hi:
                parts.append(_break_mark(x, y0 + 9, bar_w - 1))
            if (show_values and v) or v > hi:
                ty = y0 - 5 if v > 0 else y1 + VALUE_SIZE + 3
                parts.append(_text(x0 + (j + 0.5) * bar_w, ty, value_format(v), "value"))
    every = max(1, math.ceil((_label_room(categories) + 10) / band))
    for i, category in enumerate(categories):
        if (n - 1 - i) % every == 0:  # counted from the last: the newest category is labelled
            parts.append(_text(left + (i + 0.5) * band, bottom + 17, category, "tick"))
    parts.append(_text(left + plot_w / 2, height - 8, x_label, "axis-label"))
    if legend is None and len(series) > 1:
        legend = [(s.name, s.color) for s in series]
    if legend:
        parts += _legend(legend, right, 14)
    return _svg(chart_id, width, height, f"{y_label} by {x_label}", parts)


def hbars(
    chart_id: str,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    x_label: str,
    color: str,
    tips: Sequence[str],
    width: int = WIDTH,
    row: int = 20,
) -> str:
    """A ranking: one horizontal bar per label, largest first as given, value at the bar's end."""
    top = 10
    left = 16 + _label_room(labels)
    right = width - 16 - _label_room([count(v) for v in values], VALUE_SIZE)
    bottom = top + row * len(labels)
    height = bottom + 44
    ticks = nice_ticks(0, max(values, default=1) or 1)

    def x_of(v: float) -> float:
        return left + v / ticks[-1] * (right - left)

    parts = []
    for t in ticks:
        x = x_of(t)
        cls = "zero" if t == 0 else "grid"
        parts.append(
            f'<line class="{cls}" x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{bottom:.1f}"/>'
        )
        parts.append(_text(x, bottom + 16, count(t), "tick"))
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = top + i * row
        parts.append(_text(left - 8, y + row / 2 + 4, label, "tick label", anchor="end"))
        parts.append(_bar(left, y + 4, x_of(value) - left, row - 8, color, label, value, tips[i]))
        parts.append(_text(x_of(value) + 6, y + row / 2 + 4, count(value), "value", anchor="start"))
    parts.append(_text((left + right) / 2, height - 8, x_label, "axis-label"))
    return _svg(chart_id, width, height, f"{x_label} by account", parts)


def log2_histogram(
    chart_id: str,
    bins: Sequence[tuple[int, int, int]],
    *,
    x_label: str,
    y_label: str,
    color: str,
    tip: Callable[[int, int, int], str],
    width: int = WIDTH,
    height: int = 300,
) -> str:
    """Counts over bins [lo, hi] that double in width (a log2 x axis), contiguous from the first
    to the last; a bin (0, 0) is drawn apart on the left, since log scales have no zero."""
    zero = [b for b in bins if b[1] == 0]
    rest = [b for b in bins if b[1] > 0]
    ticks = nice_ticks(0, max(c for _, _, c in bins))
    left = 34 + _label_room([count(t) for t in ticks])
    right, top, bottom = width - 16, 20, height - 46
    slots = len(rest) + (1.5 if zero else 0)
    band = (right - left) / slots

    def y_of(v: float) -> float:
        return bottom - v / ticks[-1] * (bottom - top)

    parts = _y_axis(ticks, count, y_of, left, right, y_label, top, bottom)
    show_values = len(bins) <= 20
    every = max(1, math.ceil((_label_room([count(b[1] + 1) for b in rest]) + 8) / band))
    x = left
    for lo, hi, n in zero + rest:
        name = f"{lo}" if lo == hi else f"{lo}\u2013{hi}"
        parts.append(
            _bar(x + 1, y_of(n), band - 2, bottom - y_of(n), color, name, n, tip(lo, hi, n))
        )
        if show_values and n:
            parts.append(_text(x + band / 2, y_of(n) - 5, count(n), "value"))
        if hi == 0:
            parts.append(_text(x + band / 2, bottom + 17, "0", "tick"))
            x += band / 2  # the gap that says: the axis is broken here
        x += band
    for k, (lo, _, _) in enumerate([*rest, (rest[-1][1] + 1, 0, 0)] if rest else []):
        edge = left + ((1.5 if zero else 0) + k) * band
        parts.append(
            f'<line class="tickmark" x1="{edge:.1f}" x2="{edge:.1f}" '
            f'y1="{bottom:.1f}" y2="{bottom + 4:.1f}"/>'
        )
        if k % every == 0:
            parts.append(_text(edge, bottom + 17, count(lo), "tick"))
    parts.append(_text((left + right) / 2, height - 8, x_label, "axis-label"))
    return _svg(chart_id, width, height, f"{y_label} by {x_label}", parts)
