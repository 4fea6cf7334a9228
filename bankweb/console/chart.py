"""The settlement windows' history as an SVG bar chart, drawn on the server (no script): one
bar per window, oldest on the left, its height the window's gross amount, its colour its
state. This computes the geometry; ``templates/_chart.html`` draws it (auto-escaped, with
presentation attributes only: the pages' CSP allows no inline style)."""

from __future__ import annotations

from dataclasses import dataclass

from bankweb.console.ports import WindowRow

WIDTH, HEIGHT = 640, 220
LEFT, BOTTOM, TOP, RIGHT = 70, 30, 14, 10
COLOURS = {"OPEN": "#8aa4b8", "CLOSED": "#d9a400", "SETTLED": "#0b6e4f"}
MOST_WINDOWS = 30


@dataclass(frozen=True)
class Bar:
    """One window's bar."""

    x: float
    y: int
    width: float
    height: int
    colour: str
    window: str
    state: str
    label: str


@dataclass(frozen=True)
class Chart:
    """What the template draws."""

    title: str
    bars: tuple[Bar, ...]
    top_label: str
    legend: tuple[tuple[int, str, str], ...]  # (x, colour, state)
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    plot_bottom: int = HEIGHT - BOTTOM
    right: int = WIDTH - RIGHT


def _amount(minor: int) -> str:
    return f"{minor / 100:,.0f}"


def window_chart(windows: list[WindowRow], currency: str) -> Chart:
    """The chart of ``windows`` (newest first, as listed): at most the last 30."""
    history = list(reversed(windows[:MOST_WINDOWS]))
    top = max([w.gross for w in history] + [1])
    plot_h = HEIGHT - BOTTOM - TOP
    slot = (WIDTH - LEFT - RIGHT) / max(len(history), 1)
    bars = []
    for index, window in enumerate(history):
        height = max(1, round(plot_h * window.gross / top)) if window.gross > 0 else 1
        bars.append(
            Bar(
                x=round(LEFT + index * slot + slot * 0.15, 1),
                y=TOP + plot_h - height,
                width=round(slot * 0.7, 1),
                height=height,
                colour=COLOURS.get(window.state, "#4a5865"),
                window=window.name,
                state=window.state,
                label=f"{window.window_id[:8]}: {window.state.lower()}, {_amount(window.gross)} {currency}",
            )
        )
    legend = tuple((LEFT + i * 80, colour, state.lower()) for i, (state, colour) in enumerate(COLOURS.items()))
    return Chart(
        title=f"Gross amount per settlement window, {currency}",
        bars=tuple(bars),
        top_label=_amount(top),
        legend=legend,
    )
