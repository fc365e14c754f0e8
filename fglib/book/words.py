"""Words a person wrote, kept true by the numbers they rest on.

The book's sentences are written by a person in each chapter's markdown, with numbers glued in
(`{glue:text}` with a format). A sentence whose truth depends on the data (a direction such as
"fewer iterations in every pair", a verdict word, "below 1") has a check in a cell hidden from
the page, tagged `words-check`, written over the glued values alone:

    if not smoke:
        check(glued("cnn_T_high") < 1, "forward gradients reached backprop's lowest loss in less time")

A run whose results no longer support a sentence stops with NoLongerTrue, naming the sentence.
`tests/test_words.py` reads every chapter's glued values back from its committed outputs
(`glued_in`) and runs its checks on them, so a page whose numbers stopped supporting its words
fails the tests too.
"""
import ast
import json
import pathlib

GLUED = {}   # name -> value, filled by fglib.book.glue as a chapter runs
CHECK_TAG = "words-check"


class NoLongerTrue(AssertionError):
    """A sentence of the book that its numbers no longer support."""


def glued(name):
    """The value glued under `name` in this run of the chapter (KeyError naming it if none);
    'page.ipynb::name' reads another page's glued value from its committed outputs (a chapter
    runs in book/, beside the other pages), as the book's `{glue:text}` role does."""
    if "::" in name:
        return _glued_on(pathlib.Path(), name)
    if name not in GLUED:
        raise KeyError(f"nothing was glued as {name!r}: a check may only use numbers the page shows")
    return GLUED[name]


def beside(*pages):
    """Whether these pages are beside the running chapter (in the repository's book/ folder). A
    chapter opened alone, as on Colab, has no other page beside it: the checks that read another
    page's numbers are skipped there (the published page shows them as they were checked)."""
    return all(pathlib.Path(page).is_file() for page in pages)


def _glued_on(folder, name):
    """'page.ipynb::key': the value that page, in `folder`, glued as key (KeyError naming both if none)."""
    doc, key = name.split("::", 1)
    values = glued_in(pathlib.Path(folder) / doc)
    if key not in values:
        raise KeyError(f"{doc} glued nothing as {key!r}")
    return values[key]


def check(condition, sentence):
    """Raise NoLongerTrue naming `sentence` unless `condition` holds."""
    if not isinstance(sentence, str) or not sentence.strip():
        raise TypeError("sentence must be the words the check stands for, as the page says them")
    if not bool(condition):
        raise NoLongerTrue(f"the saved results no longer support this sentence: “{sentence}”. Rewrite it in the "
                           "chapter's markdown (or find out what changed in the results)")


def glued_in(notebook):
    """{name: value} of every value a committed notebook glued, read from its outputs."""
    cells = json.loads(pathlib.Path(notebook).read_text())["cells"]
    out = {}
    for cell in cells:
        for output in cell.get("outputs", []):
            meta = output.get("metadata", {}).get("scrapbook")
            if meta and "name" in meta:
                text = output["data"].get(meta["mime_prefix"] + "text/plain")
                if text is not None:
                    out[meta["name"]] = _literal(text)
    return out


def _literal(text):
    """A glued value from its stored text (repr): numbers, strings, lists, dicts; nan and inf too,
    alone or inside a container. Nothing else is evaluated: any other name leaves the text as it is."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return text
    special = {"nan": float("nan"), "inf": float("inf")}
    names = [node.id for node in ast.walk(tree) if isinstance(node, ast.Name)]
    if not names or not set(names) <= set(special):
        return text

    class Literal(ast.NodeTransformer):   # each nan / inf as a constant, so that literal_eval takes it
        def visit_Name(self, node):
            return ast.copy_location(ast.Constant(special[node.id]), node)
    return ast.literal_eval(ast.fix_missing_locations(Literal().visit(tree)))


def check_cells(notebook):
    """The source of each cell of a notebook tagged `words-check`."""
    cells = json.loads(pathlib.Path(notebook).read_text())["cells"]
    return ["".join(c["source"]) for c in cells if CHECK_TAG in c.get("metadata", {}).get("tags", [])]


def run_checks(notebook):
    """Run a committed notebook's word checks on the values its outputs glued; the number of
    checks run. Raises NoLongerTrue naming the first sentence its numbers do not support."""
    values = glued_in(notebook)
    ran = 0

    def counted_check(condition, sentence):
        nonlocal ran
        ran += 1
        check(condition, sentence)

    def from_page(name):
        if "::" in name:   # another page's value, beside this one
            return _glued_on(pathlib.Path(notebook).parent, name)
        if name not in values:
            raise KeyError(f"{pathlib.Path(notebook).name} glued nothing as {name!r}")
        return values[name]
    for source in check_cells(notebook):
        code = "\n".join(line for line in source.splitlines() if not line.startswith(("from ", "import ")))
        exec(compile(code, f"{pathlib.Path(notebook).name} (words-check)", "exec"),
             {"check": counted_check, "glued": from_page, "smoke": False, "math": __import__("math"),
              "beside": lambda *pages: all((pathlib.Path(notebook).parent / page).is_file() for page in pages)})
    return ran


def sentences(markdown, titles=None):
    """The sentences of a page's written text, roughly as a reader meets them: code blocks, tables
    and headings left out, maths and a glued number counted as one word each, a role such as
    {doc}`page` as its text (a bare {doc}`page` as that page's title, from `titles`, as the book
    renders it)."""
    import re
    titles = titles or {}
    text = re.sub(r"```.*?```", " ", markdown, flags=re.S)
    text = re.sub(r"\$\$.*?\$\$", " X ", text, flags=re.S)
    text = re.sub(r"\{glue(?::\w+)?\}`[^`]*`", "N", text)
    text = re.sub(r"\{doc\}`([^`<]*)`", lambda m: titles.get(m.group(1).strip(), m.group(1)), text)
    text = re.sub(r"\{\w+(?::\w+)?\}`([^`<]*)[^`]*`", r"\1", text)
    text = re.sub(r"\$[^$]*\$", "X", text)
    text = re.sub(r"^(#|\||:::).*$", "", text, flags=re.M)
    for short, plain in (("e.g.", "eg"), ("i.e.", "ie"), ("et al.", "et al")):
        text = text.replace(short, plain)
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z*(`{])|\n\s*\n|\n- ", text)
    return [" ".join(p.split()) for p in parts if p.strip()]


def page_titles(folder):
    """{page name: its title} for the book's pages in `folder`: a notebook's or Markdown file's
    first heading, as {doc}`page` renders it."""
    import re
    out = {}
    for page in sorted(pathlib.Path(folder).glob("*.ipynb")) + sorted(pathlib.Path(folder).glob("*.md")):
        found = re.search(r"^# (.+)$", written_text(page), flags=re.M)
        if found:
            out[page.stem] = found.group(1).strip()
    return out


def written_text(page):
    """A page's written text: its markdown cells (a notebook) or the file itself (Markdown)."""
    page = pathlib.Path(page)
    if page.suffix == ".md":
        return page.read_text()
    return "\n\n".join("".join(c["source"]) for c in json.loads(page.read_text())["cells"] if c["cell_type"] == "markdown")


def long_sentences(page, limit=40):
    """The sentences of a page's written text longer than `limit` words, other pages' titles
    counted as the book renders a bare {doc}`page`."""
    page = pathlib.Path(page)
    return [s for s in sentences(written_text(page), page_titles(page.parent)) if len(s.split()) > limit]


# One number per quantity: each of the book's canonical quantities, the page and key that measure
# it, and every other page and key that quotes it (they must glue the same value, not a measurement
# of their own; a page that shows its own measurement of the quantity says in words why it differs).
CANONICAL = {
    "S_f/S_b, logistic regression": ("logreg.ipynb::logreg_S", ["verdict.ipynb::intro_S_logreg",
                                                                 "verdict.ipynb::c3_logreg"]),
    "S_f/S_b, MLP": ("mlp.ipynb::mlp_S", ["verdict.ipynb::intro_S_mlp", "verdict.ipynb::c3_mlp",
                                          "mlp_long.ipynb::mlp_long_S", "mlp_long.ipynb::mlp_long_rl_S"]),
    "S_f/S_b, CNN": ("cnn.ipynb::cnn_S", ["verdict.ipynb::intro_S_cnn", "verdict.ipynb::c3_cnn", "cnn.ipynb::cnn_rl_S"]),
    "step memory FG/BP, CNN": ("cnn.ipynb::cnn_memory_ratio", ["verdict.ipynb::c6_low", "verdict.ipynb::intro_mem_min"]),
    "step memory FG/BP, deepest network": ("scaling.ipynb::depth_mem_ratio_deepest", ["scaling.ipynb::scaling_mem_min"]),
    "step memory in place/BP, lowest over the networks": ("scaling.ipynb::scaling_lean_min", ["verdict.ipynb::c6_lean_low"]),
}


def quoted_differently(folder, canonical=None, rel=1e-9):
    """Each quotation of a canonical quantity whose glued value differs from the canonical page's:
    [(quantity, quoting page::key, its value, canonical page::key, the canonical value)]."""
    found = []
    for quantity, (source, quotes) in (canonical or CANONICAL).items():
        value = _glued_on(folder, source)
        for quote in quotes:
            said = _glued_on(folder, quote)
            if not abs(said - value) <= rel * max(1.0, abs(value)):
                found.append((quantity, quote, said, source, value))
    return found
