"""Numbers glued into the prose write their exponents as the book's tables do: 9.7e-5, not
Python's padded 9.7e-05 (`{glue:text}` formats with Python's format(), which pads the exponent
to two digits)."""
import re

from docutils import nodes
from sphinx.transforms.post_transforms import SphinxPostTransform

EXPONENT = re.compile(r"(?<=\d)e(?:\+|(-))?0*(?=\d)")


def unpadded(text):
    """'9.7e-05' -> '9.7e-5', '2.5e+12' -> '2.5e12', '1e+00' -> '1e0' (as fglib.book.report.exponent_text
    writes them); other text as it is."""
    return EXPONENT.sub(lambda m: f"e{m.group(1) or ''}", text)


class UnpadGluedExponents(SphinxPostTransform):
    """After myst-nb has pasted the glued numbers (its cross-page glue runs at priority 5)."""
    default_priority = 6

    def apply(self, **kwargs):
        for node in list(self.document.findall(nodes.inline)):
            if "pasted-text" in node.get("classes", []):
                text = node.astext()
                if len(node.children) == 1 and isinstance(node[0], nodes.Text) and unpadded(text) != text:
                    node.replace(node[0], nodes.Text(unpadded(text)))


def setup(app):
    app.add_post_transform(UnpadGluedExponents)
    return {"parallel_read_safe": True}
