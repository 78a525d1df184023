"""The report's stylesheet, inlined into every page (no external file, no CDN: the page opens offline).

Kept as a Python string rather than a package data file so that it ships with the module whatever the
packaging configuration, and so that the page's Content-Security-Policy can forbid every external load.
"""

from __future__ import annotations

__all__ = ["CSP", "CSS"]

# No script, no external anything: images are data: URIs and the only style is the inline sheet.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

CSS = """
:root { --fg: #1b1f24; --muted: #5b6470; --line: #d8dde3; --bg: #ffffff; --soft: #f4f6f8;
        --ok: #1a7f37; --bad: #c62828; --warn: #9a6700; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--fg); background: var(--bg); margin: 0; padding: 24px 32px 64px; max-width: 1500px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 14px; margin: 0 0 6px; }
.sub { color: var(--muted); margin: 0 0 12px; }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.scroll { overflow-x: auto; }
table.runs td { white-space: nowrap; padding: 4px 8px; } table.runs th { padding: 4px 8px; } table.runs .mono { word-break: normal; }
.ci { color: var(--muted); font-size: 12px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px;
          vertical-align: baseline; }
.mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; word-break: break-all; }
.bad { color: var(--bad); } .ok { color: var(--ok); } .warn { color: var(--warn); }
.badge { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 12px; font-weight: 600;
         color: #fff; background: var(--muted); }
.badge.ok { background: var(--ok); color: #fff; } .badge.bad { background: var(--bad); color: #fff; }
.legend { color: var(--muted); font-size: 12px; margin: 4px 0 14px; }
.legend i { display: inline-block; width: 22px; height: 12px; vertical-align: middle; margin: 0 4px 0 10px;
            border: 1px solid var(--line); }
.video { border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; margin: 14px 0;
         background: #fff; }
.video > header { display: flex; gap: 14px; align-items: baseline; flex-wrap: wrap; margin-bottom: 8px; }
.video > header .path { color: var(--muted); }
.item { border-top: 1px dashed var(--line); padding-top: 8px; margin-top: 8px; }
.item:first-of-type { border-top: none; margin-top: 0; }
.q { font-weight: 600; white-space: pre-wrap; }
ul.opts { list-style: none; margin: 2px 0 6px; padding-left: 8px; columns: 2; column-gap: 28px; }
ul.opts li.gt { font-weight: 600; color: var(--ok); }
.gt-line { margin-bottom: 6px; }
table.cmp { width: 100%; }
table.cmp td { padding: 6px 8px; }
table.cmp td.who { width: 190px; }
table.cmp td.reply { width: 300px; }
.reply .text { white-space: pre-wrap; max-height: 7.5em; overflow: auto; display: block; }
.strip { overflow-x: auto; max-width: 900px; }
.strip img { display: block; image-rendering: auto; }
.labels { display: flex; gap: 2px; color: var(--muted); font-size: 10px; }
.labels span { flex: none; text-align: center; overflow: hidden; white-space: nowrap; }
.placeholder { display: flex; align-items: center; justify-content: center; min-height: 60px;
               max-width: 520px; border: 2px dashed var(--bad); border-radius: 6px; color: var(--bad);
               background: #fff5f5; padding: 8px 12px; font-size: 13px; }
.note { color: var(--muted); font-size: 12px; }
details { margin: 6px 0 12px; } summary { cursor: pointer; color: var(--muted); }
svg.chart text.tick, svg.attn text.tick { font-size: 10px; fill: #5b6470; }
svg.chart text.axis { font-size: 12px; fill: #1b1f24; }
svg.chart text.pt { font-size: 11px; fill: #1b1f24; }
svg.attn { display: block; margin-top: 4px; }
.error-box { border: 1px solid var(--bad); background: #fff5f5; padding: 8px 12px; border-radius: 6px; }
"""
