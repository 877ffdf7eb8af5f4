"""Sphinx extension: drop exact duplicate <script> entries from every page.

sphinx-thebe (loaded by Jupyter Book) registers its inline configuration script
(``const THEBE_JS_URL = ...``) once per read phase; in a fresh Jupyter Book build that is twice,
and the second ``const`` declaration is a JavaScript error on every page
("Identifier 'THEBE_JS_URL' has already been declared"). The book's browser check
(tests/test_book_html.py) fails on any JavaScript error, so we keep the first copy only.
"""
from __future__ import annotations


def _dedupe(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for js in scripts:
        key = (getattr(js, "filename", str(js)) or "",     # None and "" both mean "inline"
               tuple(sorted((k, str(v)) for k, v in getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    scripts[:] = kept       # in place: handlers after us add to this same list


def setup(app):
    # Early: 'html-page-context' stops at the first handler that returns a template name.
    app.connect("html-page-context", _dedupe, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
