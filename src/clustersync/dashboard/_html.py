"""Small HTML building blocks of the dashboard: escaping, times, badges and icons.

Every function returns HTML text; every value that comes from the store goes through
:func:`esc` (or :func:`attr`) on its way in. ``static/dashboard.js`` mirrors
:func:`relative` and :func:`duration` to keep times current between two refreshes.
"""

from __future__ import annotations

import html
import json
import math
from datetime import UTC, datetime
from typing import Any

from .._core.info import format_duration

#: Longest props preview in a table cell (characters of compact JSON).
PROPS_PREVIEW_CHARS = 80
#: Longest text kept in a ``title`` tooltip.
TOOLTIP_CHARS = 2000


def esc(value: object) -> str:
    """``value`` as HTML text (``<``, ``&`` and quotes escaped)."""
    return html.escape(str(value), quote=True)


def attr(value: object) -> str:
    """``value`` as a double-quoted attribute value, quotes included."""
    return f'"{esc(value)}"'


# -- numbers and times ---------------------------------------------------------------------


def count(value: int) -> str:
    """``1000000`` -> ``"1,000,000"``."""
    return f"{value:,}"


def short_duration(seconds: float) -> str:
    """A coarse positive duration: ``"42s"``, ``"5m"``, ``"2h 5m"``, ``"3d 4h"``."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    if whole < 86400:
        hours, minutes = whole // 3600, whole % 3600 // 60
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = whole // 86400, whole % 86400 // 3600
    return f"{days}d {hours}h" if hours else f"{days}d"


def relative(seconds: float) -> str:
    """A moment ``seconds`` from now: ``"in 5m"``, ``"3s ago"``, ``"now"`` (under 1s)."""
    if math.isnan(seconds) or math.isinf(seconds):
        return "?"
    if abs(seconds) < 1:
        return "now"
    text = short_duration(abs(seconds))
    return f"in {text}" if seconds > 0 else f"{text} ago"


def duration(seconds: float) -> str:
    """A measured duration: ``"1.2 ms"``, ``"850 ms"``, ``"12.3 s"``, ``"5m 03s"``."""
    if seconds < 0:
        return "-" + duration(-seconds)
    return format_duration(seconds, spaced=True)


def utc_text(moment: datetime) -> str:
    """``"2026-12-06 22:46:01 UTC"``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def moment(value: datetime | None, now: float, *, never: str = "never") -> str:
    """A ``<time>`` that reads relative to now (kept current by the page's script) and
    shows the UTC time on hover."""
    if value is None:
        return f'<span class="muted">{esc(never)}</span>'
    ts = value.timestamp()
    return (
        f"<time datetime={attr(value.astimezone(UTC).isoformat())} data-ts={attr(f'{ts:.3f}')}"
        f" title={attr(utc_text(value))}>{esc(relative(ts - now))}</time>"
    )


def countdown(seconds: float, now: float) -> str:
    """A moment ``seconds`` from now, as :func:`moment` (rounded to the second, so that a
    refresh changes the page only when the moment moves)."""
    return moment(datetime.fromtimestamp(round(now + seconds), UTC), now)


# -- props ---------------------------------------------------------------------------------


def props_preview(props_json: str) -> str:
    """Compact, truncated JSON of a job's props, with the whole of it on hover."""
    try:
        text = json.dumps(json.loads(props_json), separators=(", ", ": "), ensure_ascii=False)
    except ValueError:
        text = props_json
    return props_value(text)


def props_value(text: str) -> str:
    if text == "null":
        return '<span class="muted">—</span>'
    short = text if len(text) <= PROPS_PREVIEW_CHARS else text[: PROPS_PREVIEW_CHARS - 1] + "…"
    tip = text if len(text) <= TOOLTIP_CHARS else text[: TOOLTIP_CHARS - 1] + "…"
    return f"<code class=props title={attr(tip)}>{esc(short)}</code>"


def props_of(value: Any) -> str:
    """The preview of props given as a Python value (failed jobs)."""
    try:
        text = json.dumps(value, separators=(", ", ": "), ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return props_value(text)


# -- badges, buttons, empty states -----------------------------------------------------------

#: Badge tones: neutral, ok (green), warn (amber), error (red), info (blue), accent.
TONES = ("neutral", "ok", "warn", "error", "info", "accent")


def badge(text: str, tone: str = "neutral", *, title: str | None = None, dot: bool = True) -> str:
    tip = f" title={attr(title)}" if title else ""
    marker = "<i></i>" if dot else ""
    return f'<span class="badge {tone}"{tip}>{marker}{esc(text)}</span>'


def action_button(
    action: str,
    key: str,
    label: str,
    *,
    icon_name: str,
    tone: str = "",
    confirm: str | None = None,
    confirm_label: str | None = None,
    confirm_tone: str = "danger",
) -> str:
    """A button the page's script turns into ``POST actions/<action>`` with ``{"key"}``;
    with ``confirm``, after a confirmation dialog whose button reads ``confirm_label``
    (``"danger"``: red, ``"primary"``: the accent colour)."""
    extra = ""
    if confirm:
        extra += f" data-confirm={attr(confirm)} data-confirm-label={attr(confirm_label or label)}"
        if confirm_tone != "danger":
            extra += f" data-confirm-tone={attr(confirm_tone)}"
    return (
        f'<button type="button" class="btn small {tone}" data-action={attr(action)}'
        f" data-key={attr(key)}{extra}>{icon(icon_name)}<span>{esc(label)}</span></button>"
    )


def empty(icon_name: str, title: str, text: str) -> str:
    return f'<div class="empty">{icon(icon_name, size=28)}<h3>{esc(title)}</h3><p>{text}</p></div>'


# -- icons (inline SVG, 24x24 strokes) ------------------------------------------------------

_ICONS = {
    "logo": (
        '<circle cx="12" cy="5" r="2.6"/><circle cx="5" cy="17.5" r="2.6"/>'
        '<circle cx="19" cy="17.5" r="2.6"/><path d="M10.7 7.3 6.3 15.2M13.3 7.3l4.4 7.9'
        'M7.6 17.5h8.8"/>'
    ),
    "overview": (
        '<rect x="3" y="3" width="7" height="9" rx="1.5"/><rect x="14" y="3" width="7"'
        ' height="5" rx="1.5"/><rect x="14" y="12" width="7" height="9" rx="1.5"/>'
        '<rect x="3" y="16" width="7" height="5" rx="1.5"/>'
    ),
    "lock": (
        '<rect x="4" y="11" width="16" height="10" rx="2"/><path d="M8 11V7a4 4 0 0 1 8 0v4"/>'
    ),
    "repeat": (
        '<path d="M17 2l4 4-4 4"/><path d="M3 11v-1a4 4 0 0 1 4-4h14"/><path d="M7 22l-4-4 4-4"/>'
        '<path d="M21 13v1a4 4 0 0 1-4 4H3"/>'
    ),
    "clock": '<circle cx="12" cy="12" r="9"/><path d="M12 7v5l3 2"/>',
    "alert": (
        '<path d="M10.3 3.9 1.8 18a2 2 0 0 0 1.7 3h17a2 2 0 0 0 1.7-3L13.7 3.9a2 2 0 0 0-3.4 0z"/>'
        '<path d="M12 9v4M12 17h.01"/>'
    ),
    "activity": '<path d="M22 12h-4l-3 9L9 3l-3 9H2"/>',
    "pause": '<rect x="6" y="4" width="4" height="16" rx="1"/><rect x="14" y="4" width="4"'
    ' height="16" rx="1"/>',
    "play": '<path d="M6 4l14 8-14 8z"/>',
    "zap": '<path d="M13 2 3 14h9l-1 8 10-12h-9z"/>',
    "x": '<path d="M18 6 6 18M6 6l12 12"/>',
    "unlock": (
        '<rect x="4" y="11" width="16" height="10" rx="2"/><path d="M8 11V7a4 4 0 0 1 7.9-.9"/>'
    ),
    "rotate": '<path d="M3 12a9 9 0 1 0 3-6.7L3 8"/><path d="M3 3v5h5"/>',
    "search": '<circle cx="11" cy="11" r="7"/><path d="m21 21-4.3-4.3"/>',
    "database": (
        '<ellipse cx="12" cy="5" rx="8" ry="3"/><path d="M4 5v14c0 1.7 3.6 3 8 3s8-1.3 8-3V5"/>'
        '<path d="M4 12c0 1.7 3.6 3 8 3s8-1.3 8-3"/>'
    ),
    "folder": '<path d="M3 6a2 2 0 0 1 2-2h4l2 2h8a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H5a2 2 0'
    ' 0 1-2-2z"/>',
    "server": (
        '<rect x="3" y="3" width="18" height="7" rx="2"/><rect x="3" y="14" width="18"'
        ' height="7" rx="2"/><path d="M7 6.5h.01M7 17.5h.01"/>'
    ),
    "list": '<path d="M8 6h13M8 12h13M8 18h13M3 6h.01M3 12h.01M3 18h.01"/>',
    "check": '<path d="M20 6 9 17l-5-5"/>',
    "inbox": (
        '<path d="M22 12h-6l-2 3h-4l-2-3H2"/><path d="M5.5 5.1 2 12v6a2 2 0 0 0 2 2h16a2 2 0 0 0'
        ' 2-2v-6l-3.5-6.9A2 2 0 0 0 16.8 4H7.2a2 2 0 0 0-1.7 1.1z"/>'
    ),
    "eye": '<path d="M2 12s3.6-7 10-7 10 7 10 7-3.6 7-10 7S2 12 2 12z"/><circle cx="12" cy="12"'
    ' r="3"/>',
    "chevron": '<path d="m9 18 6-6-6-6"/>',
    "first": '<path d="m11 17-5-5 5-5M18 17l-5-5 5-5"/>',
}


def icon(name: str, *, size: int = 16, label: str | None = None) -> str:
    """An inline SVG icon (``currentColor`` strokes); decorative unless ``label``."""
    a11y = f'role="img" aria-label={attr(label)}' if label else 'aria-hidden="true"'
    return (
        f'<svg class="icon" width="{size}" height="{size}" viewBox="0 0 24 24" fill="none"'
        ' stroke="currentColor" stroke-width="2" stroke-linecap="round"'
        f' stroke-linejoin="round" {a11y}>{_ICONS[name]}</svg>'
    )
