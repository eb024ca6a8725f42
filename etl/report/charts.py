"""The report's five charts: SVG (etl.report.svg) from its ReportData, or None when there is
nothing to draw."""

from __future__ import annotations

from etl.report.data import ReportData
from etl.report.svg import Series, columns, count, duration, duration_ticks, hbars, log2_histogram

COLORS = {
    "fans": "#4f6bed",
    "gained": "#2f9e6e",
    "lost": "#e05260",
    "first": "#8ea4f5",
    "versions": "#8a5cd6",
    "done": "#2f9e6e",
    "running": "#f0a43a",
    "abandoned": "#a3aab6",
}


def fans_distribution(data: ReportData) -> str | None:
    """Accounts per log2 bin of current fans."""
    if not data.fan_bins:
        return None
    return log2_histogram(
        "fans-distribution",
        data.fan_bins,
        x_label="fans (log scale: each bin twice as wide as the last)",
        y_label="accounts",
        color=COLORS["fans"],
        height=400,
        tip=lambda lo, hi, n: (
            f"{lo}\u2013{hi} fans: {n:,} accounts" if lo != hi else f"{lo} fans: {n:,} accounts"
        ),
    )


def top_accounts(data: ReportData) -> str | None:
    """The fans ranking; nickname, follows and mutual follows in each bar's tooltip."""
    top = data.top_accounts
    if not top:
        return None
    return hbars(
        "top-accounts",
        [t.account if len(t.account) <= 22 else t.account[:21] + "\u2026" for t in top],
        [t.fans for t in top],
        x_label="fans (current)",
        color=COLORS["fans"],
        row=18,
        tips=[
            f"{t.account}{f' ({t.nick})' if t.nick else ''}: {t.fans:,} fans, "
            f"{t.follows:,} follows, {t.mutual:,} mutual"
            for t in top
        ],
    )


def daily_follow_changes(data: ReportData) -> str | None:
    """Fans gained (up) and lost (down) per UTC day."""
    daily = data.daily
    if not daily:
        return None
    return columns(
        "daily-follow-changes",
        [d.strftime("%b %d") for d, _, _ in daily],
        [
            Series("gained", [g for _, g, _ in daily], COLORS["gained"]),
            Series("lost", [-lo for _, _, lo in daily], COLORS["lost"]),
        ],
        x_label="day (UTC)",
        y_label="fans gained / lost",
        tip=lambda i, s: f"{daily[i][0]}: {abs(s.values[i]):,.0f} fans {s.name}",
        value_format=lambda v: count(abs(v)),
        diverging=True,
        width=1160,
        height=260,
    )


def profile_changes(data: ReportData) -> str | None:
    """Per run: profiles seen for the first time, and new versions of known ones."""
    changes = data.profile_changes
    if not any(c.first_seen or c.new_versions for c in changes):
        return None
    return columns(
        "profile-changes",
        [f"#{c.run_id}" for c in changes],
        [
            Series("first seen", [c.first_seen for c in changes], COLORS["first"]),
            Series("new version", [c.new_versions for c in changes], COLORS["versions"]),
        ],
        x_label="run",
        y_label="profiles stored",
        tip=lambda i, s: f"run {changes[i].run_id}: {s.values[i]:,.0f} {s.name}",
    )


def run_durations(data: ReportData) -> str | None:
    """Per run: finished minus started (until now while running), coloured by status."""
    runs, now = data.runs, data.generated_at
    if not runs:
        return None
    seconds = [run.seconds(now) for run in runs]
    # A run left "running" by a crash would count for days and flatten every other bar:
    # the axis fits the finished runs, and a longer running bar is drawn cut.
    finished = [s for s, run in zip(seconds, runs, strict=True) if run.finished_at]
    ticks, unit_name, unit = duration_ticks(max(finished or seconds))
    return columns(
        "run-durations",
        [f"#{run.id}" for run in runs],
        [Series("duration", seconds, COLORS["done"])],
        x_label="run",
        y_label=f"duration ({unit_name})",
        tip=lambda i, _: (
            f"run {runs[i].id} ({runs[i].job}), {runs[i].status}: {duration(seconds[i])}"
        ),
        bar_colors=[COLORS.get(run.status, COLORS["abandoned"]) for run in runs],
        legend=[(status, COLORS[status]) for status in ("done", "running", "abandoned")],
        y_ticks=(ticks, lambda t: f"{t / unit:g}"),
        value_format=duration,
    )
