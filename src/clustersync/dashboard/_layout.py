"""The frame around every page: header (store, namespace, identity), navigation, the live
indicator, the confirmation dialog and the static assets (served from the package, with
a content hash in their URL so browsers may cache them for good)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from .. import __version__
from ._html import attr, badge, esc, icon
from ._pages import NAV, Page, View

#: The assets under ``static/``: name -> media type.
ASSETS = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    version: str  # a hash of the body


@cache
def asset(name: str) -> Asset:
    """An asset of ``static/`` (``KeyError`` for an unknown name)."""
    media_type = ASSETS[name]
    body = resources.files(__package__).joinpath("static", name).read_bytes()
    return Asset(body, media_type, hashlib.sha256(body).hexdigest()[:12])


def asset_url(view: View, name: str) -> str:
    return f"{view.base}/static/{name}?v={asset(name).version}"


def render(view: View, page: Page, *, poll_ms: int) -> str:
    """The whole HTML document of ``page``."""
    source = view.source
    tabs = []
    for path, title, icon_name in NAV:
        current = ' aria-current="page"' if path == page.path else ""
        tabs.append(
            f'<a class="tab" href={attr(view.href(path))}{current}>{icon(icon_name)}'
            f"<span>{esc(title)}</span></a>"
        )
    if view.allow_actions:
        mode = badge("actions enabled", "warn", title="this dashboard can change the store")
    else:
        mode = badge("read-only", "neutral", title="start with --allow-actions to enable actions")
    meta = "".join(
        chip(icon_name, label, value, tip)
        for icon_name, label, value, tip in (
            ("database", "store", source.url, "Store URL (password redacted)"),
            ("folder", "namespace", source.namespace, "Namespace"),
            ("server", "identity", source.identity, "Identity of the dashboard's connection"),
        )
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{esc(page.title)} · clustersync</title>
<link rel="icon" href={attr(asset_url(view, "favicon.svg"))} type="image/svg+xml">
<link rel="stylesheet" href={attr(asset_url(view, "dashboard.css"))}>
<script src={attr(asset_url(view, "dashboard.js"))} defer></script>
</head>
<body data-base={attr(view.base)} data-poll="{poll_ms}">
<header class="topbar">
  <div class="wrap topbar-inner">
    <a class="brand" href={attr(view.href("/"))}>{icon("logo", size=22)}<span>clustersync</span>\
<em>dashboard</em></a>
    <div class="meta">{meta}</div>
  </div>
  <nav class="wrap tabs" aria-label="Pages">
    {"".join(tabs)}
    <span class="spacer"></span>
    {mode}
    <button type="button" class="live" id="live-toggle" aria-pressed="true"
      title="Updates every {poll_ms / 1000:g} s; click to pause">
      <i class="pulse"></i><span class="live-label">Live</span><span class="live-age"></span>
    </button>
  </nav>
</header>
<main class="wrap">
  <div class="page-head"><h1>{esc(page.title)}</h1><p class="lede">{esc(page.lede)}</p></div>
  {page.above}
  <div id="live" data-now="{view.now:.3f}">{page.live}</div>
</main>
<footer class="wrap footer">clustersync {esc(__version__)} ·
  {"actions enabled" if view.allow_actions else "read-only"}</footer>
<dialog id="confirm" aria-labelledby="confirm-title">
  <form method="dialog">
    <h2 id="confirm-title">Are you sure?</h2>
    <p id="confirm-text"></p>
    <div class="dialog-buttons">
      <button class="btn ghost" value="cancel" type="submit">Keep it</button>
      <button class="btn danger solid" value="confirm" type="submit"
        id="confirm-ok">Confirm</button>
    </div>
  </form>
</dialog>
<div id="toasts" aria-live="polite"></div>
</body>
</html>
"""


def chip(icon_name: str, label: str, value: str, tip: str) -> str:
    return (
        f'<span class="chip" title={attr(f"{tip}: {value}")}>{icon(icon_name, size=14)}'
        f'<span class="chip-label">{esc(label)}</span><code>{esc(value)}</code></span>'
    )


def error_banner(message: str) -> str:
    """What the live region shows while the store fails."""
    return (
        f'<div class="banner error" role="alert">{icon("alert", size=18)}<div><strong>The store'
        f" did not answer.</strong> {esc(message)}<div class=sub>The page retries by itself."
        "</div></div></div>"
    )
