"""`fsrouter report --html`: one self-contained page (inline CSS and SVG; no scripts, no external
assets) with the report's tables and two charts per day: the sticky hit rate, and the time to
callback (median bar, 90th percentile tick)."""
from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from ..core.report import Report

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
p.meta{color:#666;margin:0 0 16px}
table{border-collapse:collapse;margin:0 0 8px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
thead th{background:#f0f3f7}tr.total td{font-weight:bold;background:#fafafa}
.charts{display:flex;flex-wrap:wrap;gap:24px}
figure{margin:0}figcaption{font-weight:bold;margin:0 0 4px}
svg text{font:11px system-ui,sans-serif;fill:#444}
.empty{color:#888;font-style:italic}
"""

_AGENT_COLUMNS = (
    ("offered", "Offered"), ("answered", "Answered"), ("sticky_attempts", "Sticky attempts"),
    ("sticky_answered", "Sticky answered"), ("hit_rate", "Hit rate"), ("fallbacks", "Fallbacks"),
    ("rebinds_in", "Rebinds in"), ("rebinds_out", "Rebinds out"), ("missed", "Missed"),
    ("called_back", "Called back"), ("callbacks_made", "Callbacks made"),
    ("callback_median_s", "Callback median"), ("callback_p90_s", "Callback p90"),
)


def _cell(key: str, value) -> str:
    if value is None:
        return "–"
    if key == "hit_rate":
        return f"{value * 100:.0f}%"
    if key.endswith("_s"):
        return human_duration(value)
    return str(value)


def human_duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def _agents_table(report: Report) -> str:
    head = "".join(f"<th>{escape(title)}</th>" for _, title in _AGENT_COLUMNS)
    lines = [f'<table id="agents"><thead><tr><th>Agent</th>{head}</tr></thead><tbody>']
    for figures in report.agents + [report.total]:
        data = figures.as_dict()
        css = ' class="total"' if figures is report.total else ""
        cells = "".join(f"<td>{escape(_cell(key, data[key]))}</td>" for key, _ in _AGENT_COLUMNS)
        lines.append(f"<tr{css}><td>{escape(figures.agent)}</td>{cells}</tr>")
    lines.append("</tbody></table>")
    return "".join(lines)


def _rebinds_table(report: Report) -> str:
    if not report.rebinds:
        return '<p class="empty" id="rebinds">No client changed agent.</p>'
    rows = "".join(f"<tr><td>{escape(r.from_agent)}</td><td>{escape(r.to_agent or 'none')}</td>"
                   f"<td>{escape(r.kind)}</td><td>{r.count}</td></tr>" for r in report.rebinds)
    return (f'<table id="rebinds"><thead><tr><th>From</th><th>To</th><th>How</th><th>Clients</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def _days_table(report: Report) -> str:
    rows = "".join(
        f"<tr><td>{d.day.isoformat()}</td><td>{d.sticky_attempts}</td><td>{d.sticky_answered}</td>"
        f"<td>{escape(_cell('hit_rate', d.hit_rate))}</td><td>{d.callbacks}</td>"
        f"<td>{escape(_cell('x_s', d.callback_median_s))}</td><td>{escape(_cell('x_s', d.callback_p90_s))}</td></tr>"
        for d in report.days)
    return ('<table id="days"><thead><tr><th>Day (UTC)</th><th>Sticky attempts</th><th>Sticky answered</th>'
            '<th>Hit rate</th><th>Callbacks</th><th>Callback median</th><th>Callback p90</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def _bar_chart(chart_id: str, title: str, bars, top: float, label) -> str:
    """bars: (day label, value or None, tick or None); values on 0..top."""
    width, height, left, bottom, pad = 640, 220, 48, 28, 12
    plot_w, plot_h = width - left - pad, height - bottom - pad
    slot = plot_w / max(1, len(bars))
    parts = [(f'<svg id="{chart_id}" class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
              f'height="{height}" viewBox="0 0 {width} {height}" role="img"><title>{escape(title)}</title>')]
    for i in range(5):  # grid and axis labels
        y = pad + plot_h * (1 - i / 4)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - pad}" y2="{y:.1f}" stroke="#e3e3e3"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{escape(label(top * i / 4))}</text>')
    for i, (day, value, tick) in enumerate(bars):
        x = left + i * slot
        if value is not None:
            h = plot_h * min(value, top) / top
            parts.append(f'<rect class="bar" x="{x + slot * 0.15:.1f}" y="{pad + plot_h - h:.1f}" '
                         f'width="{slot * 0.7:.1f}" height="{h:.1f}" fill="#4a7fc1">'
                         f'<title>{escape(day)}: {escape(label(value))}</title></rect>'
                         f'<text class="value" x="{x + slot / 2:.1f}" y="{pad + plot_h - h - 4:.1f}" '
                         f'text-anchor="middle">{escape(label(value))}</text>')
        if tick is not None:
            y = pad + plot_h * (1 - min(tick, top) / top)
            parts.append(f'<line class="tick" x1="{x + slot * 0.1:.1f}" y1="{y:.1f}" x2="{x + slot * 0.9:.1f}" '
                         f'y2="{y:.1f}" stroke="#c14a4a" stroke-width="3"><title>{escape(day)} p90: '
                         f'{escape(label(tick))}</title></line>')
        parts.append(f'<text x="{x + slot / 2:.1f}" y="{height - 10}" text-anchor="middle">{escape(day[5:])}</text>')
    parts.append(f'<line x1="{left}" y1="{pad + plot_h}" x2="{width - pad}" y2="{pad + plot_h}" stroke="#888"/>')
    parts.append("</svg>")
    return "".join(parts)


def _charts(report: Report) -> str:
    days = report.days
    hit = _bar_chart("hit-rate-chart", "Sticky hit rate per day",
                     [(d.day.isoformat(), d.hit_rate, None) for d in days], 1.0, lambda v: f"{v * 100:.0f}%")
    longest = max([d.callback_p90_s or 0 for d in days] + [d.callback_median_s or 0 for d in days] + [60])
    minutes = lambda v: f"{v / 60:.0f}m" if longest >= 600 else human_duration(v)
    callback = _bar_chart("callback-chart", "Time to callback per day (median bar, p90 tick)",
                          [(d.day.isoformat(), d.callback_median_s, d.callback_p90_s) for d in days],
                          longest * 1.1, minutes)
    return ('<div class="charts">'
            f"<figure><figcaption>Sticky hit rate per day</figcaption>{hit}</figure>"
            f"<figure><figcaption>Time to callback per day (bar: median, red tick: 90th percentile)"
            f"</figcaption>{callback}</figure></div>")


def render(report: Report, generated_at: datetime | None = None) -> str:
    generated_at = generated_at or datetime.now(UTC)
    scope = f"group {report.group}" if report.group else "all groups"
    since = report.since.strftime("%Y-%m-%d %H:%M UTC") if report.since else "the beginning"
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<title>fsrouter report</title>"
        f"<style>{_CSS}</style></head><body>"
        "<h1>fsrouter report</h1>"
        f'<p class="meta">{escape(scope)}, since {escape(since)}; generated '
        f'{escape(generated_at.strftime("%Y-%m-%d %H:%M UTC"))}</p>'
        f"<h2>Per agent</h2>{_agents_table(report)}"
        f"<h2>Per day</h2>{_charts(report)}{_days_table(report)}"
        f"<h2>Rebinds (from whom to whom)</h2>{_rebinds_table(report)}"
        "</body></html>\n"
    )
