"""Inline SVG charts for the self-contained HTML report, drawn by hand (no plotting dependency, no network):
`bar_chart(...)`, `scatter_chart(...)`, `line_chart(...)` each return one `<svg>` element as a string."""

from __future__ import annotations

import math
from html import escape

__all__ = ["bar_chart", "scatter_chart", "line_chart"]

_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf")
_FONT = 'font-family="sans-serif" font-size="11"'


def _ticks(upper: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `upper`."""
    if upper <= 0:
        return [0.0, 1.0]
    raw = upper / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(int(math.ceil(upper / step)) + 1)]


def _fmt(value: float) -> str:
    return f"{value:.3g}" if value < 1000 else f"{value:.0f}"


def _colour(key: str, keys: list[str]) -> str:
    return _PALETTE[keys.index(key) % len(_PALETTE)]


def bar_chart(title: str, bars: list[dict], unit: str = "ms") -> str:
    """Horizontal bars to each entry's "value" with a whisker to "upper" (e.g. p50 bar, p50-p99 whisker).

    Args:
        bars: {"label", "value" (None: nothing measured), "upper", "colour_key", "note"} per bar, drawn top-down.
    """
    left, right, row_h, top = 300, 90, 20, 34
    width = 860
    plot_w = width - left - right
    measured = [b for b in bars if b.get("value") is not None]
    upper = max([b.get("upper") or b["value"] for b in measured], default=1.0)
    ticks = _ticks(upper)
    scale = plot_w / ticks[-1]
    keys = sorted({b.get("colour_key", "") for b in bars})
    height = top + row_h * len(bars) + 34
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" {_FONT}>',
             f'<text x="10" y="18" font-size="13" font-weight="bold">{escape(title)}</text>']
    axis_y = top + row_h * len(bars)
    for tick in ticks:
        x = left + tick * scale
        parts.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{axis_y}" stroke="#ddd"/>')
        parts.append(f'<text x="{x:.1f}" y="{axis_y + 14}" text-anchor="middle">{_fmt(tick)}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{axis_y + 28}" text-anchor="middle">{escape(unit)}</text>')
    for i, bar in enumerate(bars):
        y = top + i * row_h
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{escape(bar["label"])}</text>')
        if bar.get("value") is None:
            parts.append(f'<text x="{left + 4}" y="{y + 13}" fill="#888">{escape(bar.get("note", "not measured"))}</text>')
            continue
        colour = _colour(bar.get("colour_key", ""), keys)
        x_end = left + bar["value"] * scale
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{max(x_end - left, 1):.1f}" height="{row_h - 6}" '
                     f'fill="{colour}"/>')
        label_x = x_end
        if bar.get("upper") is not None:
            x_up = left + bar["upper"] * scale
            mid = y + row_h / 2
            parts.append(f'<line x1="{x_end:.1f}" y1="{mid}" x2="{x_up:.1f}" y2="{mid}" stroke="#333"/>'
                         f'<line x1="{x_up:.1f}" y1="{mid - 4}" x2="{x_up:.1f}" y2="{mid + 4}" stroke="#333"/>')
            label_x = x_up
        note = f'{_fmt(bar["value"])}' + (f' ({bar["note"]})' if bar.get("note") else "")
        parts.append(f'<text x="{label_x + 4:.1f}" y="{y + 13}">{escape(note)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _frame(title: str, x_label: str, y_label: str, x_ticks: list[float], y_ticks: list[float], y_low: float,
           width: int, height: int, box: tuple[int, int, int, int], x_pos=None) -> list[str]:
    """Title, grid, ticks and axis labels of an x/y chart; box is (left, top, plot_w, plot_h); `x_pos` maps an x
    value to pixels (default: linear from 0 to the last tick)."""
    left, top, plot_w, plot_h = box
    x_pos = x_pos or (lambda value: left + value / x_ticks[-1] * plot_w)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" {_FONT}>',
             f'<text x="10" y="18" font-size="13" font-weight="bold">{escape(title)}</text>']
    for tick in x_ticks:
        x = x_pos(tick)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#ddd"/>'
                     f'<text x="{x:.1f}" y="{top + plot_h + 14}" text-anchor="middle">{_fmt(tick)}</text>')
    span = (y_ticks[-1] - y_low) or 1.0
    for tick in y_ticks:
        y = top + plot_h - (tick - y_low) / span * plot_h
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(tick)}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 30}" text-anchor="middle">'
                 f'{escape(x_label)}</text>')
    parts.append(f'<text transform="translate(14,{top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle">'
                 f'{escape(y_label)}</text>')
    return parts


def _log_ticks(values: list[float]) -> list[float]:
    """1-2-5 ticks per decade covering the positive values, first and last tick enclosing them."""
    positive = [v for v in values if v > 0] or [1.0]
    candidates = [m * 10.0 ** e for e in range(math.floor(math.log10(min(positive))) - 1,
                                               math.ceil(math.log10(max(positive))) + 1) for m in (1, 2, 5)]
    first = max(c for c in candidates if c <= min(positive))
    last = min(c for c in candidates if c >= max(positive))
    return [c for c in candidates if first <= c <= last] if last > first else [first, first * 2]


def _y_range(values: list[float]) -> tuple[float, list[float]]:
    """A y axis that zooms onto the values (accuracies differ in the third digit) with round ticks."""
    low, high = min(values), max(values)
    pad = (high - low) * 0.15 or max(abs(high) * 0.01, 1e-3)
    low, high = low - pad, high + pad
    step = _ticks(high - low, 4)[1]
    start = math.floor(low / step) * step
    return start, [start + i * step for i in range(int(math.ceil((high - start) / step)) + 1)]


def scatter_chart(title: str, points: list[dict], x_label: str, y_label: str) -> str:
    """Points {"x", "y", "label", "colour_key", "on_front"}; the front points are joined by a line and ringed."""
    width, height, left, top = 760, 340, 60, 30
    plot_w, plot_h = width - left - 230, height - top - 45
    x_ticks = _log_ticks([p["x"] for p in points])  # latencies span milliseconds to seconds: log scale
    low, high = math.log10(x_ticks[0]), math.log10(x_ticks[-1])

    def x_pos(value: float) -> float:
        return left + (math.log10(value) - low) / ((high - low) or 1.0) * plot_w

    y_low, y_ticks = _y_range([p["y"] for p in points])
    parts = _frame(title, x_label + " (log scale)", y_label, x_ticks, y_ticks, y_low, width, height,
                   (left, top, plot_w, plot_h), x_pos)

    def xy(point: dict) -> tuple[float, float]:
        return x_pos(point["x"]), top + plot_h - (point["y"] - y_low) / ((y_ticks[-1] - y_low) or 1.0) * plot_h

    front = sorted((p for p in points if p.get("on_front")), key=lambda p: p["x"])
    if len(front) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in map(xy, front))
        parts.append(f'<polyline points="{path}" fill="none" stroke="#444" stroke-dasharray="4 3"/>')
    keys = sorted({p.get("colour_key", "") for p in points})
    for point in points:
        x, y = xy(point)
        colour = _colour(point.get("colour_key", ""), keys)
        ring = ' stroke="#000" stroke-width="1.5"' if point.get("on_front") else ""
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5" fill="{colour}"{ring}>'
                     f'<title>{escape(point["label"])}: {_fmt(point["x"])}, {point["y"]:.4f}</title></circle>')
    for i, key in enumerate(keys):  # legend
        y = top + 10 + i * 16
        parts.append(f'<circle cx="{left + plot_w + 20}" cy="{y - 4}" r="4.5" fill="{_colour(key, keys)}"/>'
                     f'<text x="{left + plot_w + 30}" y="{y}">{escape(key)}</text>')
    parts.append(f'<text x="{left + plot_w + 14}" y="{top + 16 + len(keys) * 16}" fill="#444">'
                 'ringed, dashed: Pareto front</text>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(title: str, series: dict[str, list[tuple[float, float]]], x_label: str, y_label: str) -> str:
    """One polyline with markers per named series of (x, y) points."""
    width, height, left, top = 720, 320, 60, 30
    plot_w, plot_h = width - left - 190, height - top - 45
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    x_ticks, y_ticks = _ticks(max(xs)), _ticks(max(ys))
    parts = _frame(title, x_label, y_label, x_ticks, y_ticks, 0.0, width, height, (left, top, plot_w, plot_h))
    keys = sorted(series)
    for i, key in enumerate(keys):
        colour = _colour(key, keys)
        pts = [(left + x / x_ticks[-1] * plot_w, top + plot_h - y / y_ticks[-1] * plot_h) for x, y in sorted(series[key])]
        parts.append(f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}" fill="none" '
                     f'stroke="{colour}" stroke-width="1.5"/>')
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in pts]
        parts.append(f'<line x1="{left + plot_w + 12}" y1="{top + 6 + i * 16}" x2="{left + plot_w + 26}" '
                     f'y2="{top + 6 + i * 16}" stroke="{colour}" stroke-width="2"/>'
                     f'<text x="{left + plot_w + 30}" y="{top + 10 + i * 16}">{escape(key)}</text>')
    parts.append("</svg>")
    return "".join(parts)
