"""Charts drawn on the server as inline SVG: no script, no library, no network.

The markup is built from numbers and fixed words only, and every text is escaped, so it
is safe to put in a page as is (`Markup`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 12, 28


@dataclass(frozen=True)
class Series:
    name: str
    css_class: str  # colours live in the stylesheet, so the policy needs no inline style
    values: Sequence[int]


def _nice_ceiling(value: int) -> int:
    """A round top for the axis: 1, 2, 5, 10, 20, 50, ..."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if value <= step * factor:
                return step * factor
        step *= 10


def bar_chart(title: str, labels: Sequence[str], series: Sequence[Series]) -> Markup:
    """Grouped bars, one group per label; `title` names it for screen readers, and the
    page gives the same figures as a table."""
    top = _nice_ceiling(max([1, *(v for s in series for v in s.values)]))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    group_w = plot_w / max(1, len(labels))
    bar_w = max(1.0, (group_w - 2) / max(1, len(series)))
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for fraction in (0, 0.5, 1):
        y = TOP + plot_h * (1 - fraction)
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{int(top * fraction)}</text>"
        )
    for i, label in enumerate(labels):
        x0 = LEFT + i * group_w + 1
        for j, one in enumerate(series):
            value = one.values[i]
            height = plot_h * value / top
            parts.append(
                f'<rect class="{escape(one.css_class)}" x="{x0 + j * bar_w:.1f}" '
                f'y="{TOP + plot_h - height:.1f}" width="{bar_w:.1f}" height="{height:.1f}">'
                f"<title>{escape(label)}: {value} {escape(one.name)}</title></rect>"
            )
        if i % 3 == 0:
            parts.append(
                f'<text class="axis" x="{x0 + group_w / 2:.1f}" y="{HEIGHT - 8}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every value above is a number or escaped
