"""The wording every report shares (comparisons and studies): numbers, percentage points, intervals and p-values as
text, Markdown tables, figures as PNG bytes, and the self-contained HTML page."""

from __future__ import annotations

import base64
import html
import io

import markdown
import pandas as pd
from matplotlib.figure import Figure

from regbench import stats


def plural(count: int, noun: str) -> str:
    """Write a count with its noun, singular for one: '1 epoch', '10 epochs'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def png(figure: Figure) -> bytes:
    """Render a figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def points(value, signed: bool = True) -> str:
    """Format a fraction as percentage points ('+0.12'), or an en dash when missing."""
    return "–" if pd.isna(value) else f"{value * 100:{'+' if signed else ''}.2f}"


def p_value(value) -> str:
    """Format a p-value."""
    return "–" if pd.isna(value) else ("<0.0001" if value < 1e-4 else f"{value:.4f}")


def p_text(value) -> str:
    """Write 'p = 0.0123' or 'p < 0.0001'."""
    text = p_value(value)
    return f"p {text[0]} {text[1:]}" if text.startswith("<") else f"p = {text}"


def decimal(value, digits: int = 2) -> str:
    """Format a number, or an en dash when missing."""
    return "–" if pd.isna(value) else f"{value:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """Render a Markdown table (a '|' inside a cell is escaped)."""
    def cells(values) -> str:
        return "| " + " | ".join(str(value).replace("|", "\\|") for value in values) + " |"

    lines = [cells(header), "|" + "---|" * len(header)] + [cells(row) for row in rows]
    return "\n".join(lines)


def effect_text(mean, low, high, digits: int = 2, scale: float = 100.0, unit: str = " pp") -> str:
    """Write an effect with its interval, '+0.12 pp [-0.05, +0.29]' (fractions as percentage points by default;
    scale=1, unit='' for plain numbers), saying so where there is no effect or no interval."""
    if pd.isna(mean):
        return "no paired difference (no successful pair)"
    if pd.isna(low) or pd.isna(high):
        return f"{mean * scale:+.{digits}f}{unit} [no interval: one pair, or no spread]"
    return f"{mean * scale:+.{digits}f}{unit} [{low * scale:+.{digits}f}, {high * scale:+.{digits}f}]"


def slope_text(row: pd.Series, per: str) -> str:
    """Write a slope of stats.trend_family `per` unit of x ('tenfold images') with its Holm interval, and its
    direction, or that no trend is detectable."""
    text = effect_text(row["diff_mean"], row["adj_ci_low"], row["adj_ci_high"])
    if row["holm_p"] < stats.ALPHA:
        return f"{text} per {per}, {'rising' if row['diff_mean'] > 0 else 'falling'}"
    return f"{text} per {per}, no detectable trend"


def robustness_text(trend: pd.Series, refits: pd.DataFrame, name_column: str, what: str, per: str,
                    scale: float = 100.0, unit: str = " pp") -> str:
    """Say whether a trend's verdict survives leaving out any one `what` (a width, a size, a group:
    stats.leave_one_out), or which one it rests on, with the slope `per` unit of x without it."""
    if not len(refits):
        return f"too few {what}s to leave one out"
    direction = stats.trend_direction(trend)
    rests = stats.resting_on(refits, name_column, trend[name_column], direction)
    if rests is None:
        return f"the same verdict with any one {what} left out"
    slope = effect_text(rests["diff_mean"], rests["adj_ci_low"], rests["adj_ci_high"], digits=3, scale=scale,
                        unit=unit)
    return f"resting on {what} {rests['left_out']:g}: without it {slope} per {per}, {p_text(rests['holm_p'])}"


def with_leave_one_out(trends: pd.DataFrame, refits: pd.DataFrame, name_column: str, what: str, per: str,
                       scale: float = 100.0, unit: str = " pp") -> pd.DataFrame:
    """Return `trends` with `robust` (whether each verdict is the same with any one `what` left out; True where
    there are too few to leave one out) and `one_left_out` (robustness_text)."""
    trends = trends.copy()
    trends["robust"] = [stats.resting_on(refits, name_column, row[name_column], stats.trend_direction(row)) is None
                        for _, row in trends.iterrows()]
    trends["one_left_out"] = [robustness_text(row, refits, name_column, what, per, scale, unit)
                              for _, row in trends.iterrows()]
    return trends


def span_text(effects: pd.Series, where) -> str:
    """Write a trend's two ends, 'from -4.65 pp at width 8 to +0.09 pp at width 2048', from mean effects (fractions)
    indexed by the trend's x; `where` names an x."""
    ordered = effects.sort_index()
    return (f"from {ordered.iloc[0] * 100:+.2f} pp at {where(ordered.index[0])} to "
            f"{ordered.iloc[-1] * 100:+.2f} pp at {where(ordered.index[-1])}")


def points_interval(low, high) -> str:
    """Format an interval of fractions in percentage points, e.g. '[-0.12, +0.30]'."""
    return f"[{points(low)}, {points(high)}]"


def holm_confidence(alpha, sides: int = 1) -> str:
    """Format the confidence of an interval at Holm's level, e.g. '97.5%'."""
    return "–" if pd.isna(alpha) else f"{(1 - sides * alpha) * 100:.4g}%"


def report_html(body: str, images: dict[str, bytes], title: str) -> str:
    """Render the Markdown report as one HTML page with its figures embedded (no external references)."""
    content = markdown.markdown(body, extensions=["tables"])
    for name, data in images.items():  # after the Markdown: its patterns need not scan the figures' bytes
        content = content.replace(f'src="figure:{name}.png"',
                                  f'src="data:image/png;base64,{base64.b64encode(data).decode()}"')
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>regbench report: {html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
code {{ font-size: 0.85em; word-break: break-all; }}
</style>
</head>
<body>
{content}
</body>
</html>
"""
