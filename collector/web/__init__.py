"""The collector's read-only web page: Starlette routes, Jinja2 templates (autoescaped), a server-side SVG plot."""
