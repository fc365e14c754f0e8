"""fglib's docstrings as the reference pages show them: each one as a literal block, as written.

The docstrings are plain text with ASCII maths ("g = (grad f . v) v", "theta -= lr d v"), not
reStructuredText; read as reST, their * and ` would be taken for markup. Sphinx's autodoc still
gives each object its signature, its anchor and its entry in the index, so that the chapters can
link to it ({py:func}`fglib.make_method`).
"""


def as_written(app, what, name, obj, options, lines):
    """autodoc-process-docstring: the docstring's lines become one literal block."""
    if any(line.strip() for line in lines):
        lines[:] = [".. code-block:: text", "   :class: fglib-docstring", ""] + ["   " + line for line in lines] + [""]


def pairs(app, config):
    """config-inited: _config.yml gives nitpick_ignore(_regex) as lists; Sphinx wants (type, target) tuples."""
    config.nitpick_ignore = [tuple(entry) for entry in config.nitpick_ignore]
    config.nitpick_ignore_regex = [tuple(entry) for entry in config.nitpick_ignore_regex]


def setup(app):
    import sys
    if app.srcdir and str(app.srcdir) not in sys.path:   # the publish build reads fglib from the checkout
        sys.path.insert(0, str(app.srcdir))
    app.connect("config-inited", pairs)
    app.connect("autodoc-process-docstring", as_written)
    return {"parallel_read_safe": True}
