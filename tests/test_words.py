"""The book's written sentences stay true to their numbers (fglib.book.words): every chapter's
hidden checks run on the values its committed page glued; a sentence the numbers do not support
fails, naming it."""
import json
import pathlib
import sys

import pytest

from fglib.book import words

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import book as book_tool  # noqa: E402


@pytest.mark.parametrize("chapter", book_tool.chapters(), ids=lambda p: p.stem)
def test_every_chapters_sentences_hold_on_the_numbers_its_page_shows(chapter):
    words.run_checks(chapter)


def test_the_chapters_that_state_findings_in_written_words_check_them():
    checked = {p.stem: words.run_checks(p) for p in book_tool.chapters()}
    written = {"unbiasedness", "test_functions", "logreg", "mlp", "mlp_long", "cnn", "scaling", "verdict", "distributed",
               "variance", "local_losses", "optimisers", "zeroth_order", "finetune", "implementations", "lr_sweep",
               "forward_reverse"}
    assert all(checked[name] >= 2 for name in written), checked


def test_a_chapter_with_a_sentence_its_numbers_do_not_support_fails_naming_it(tmp_path):
    """The control: the distributed chapter with one sentence's direction reversed."""
    nb = json.loads((ROOT / "book" / "distributed.ipynb").read_text())
    for cell in nb["cells"]:
        if words.CHECK_TAG in cell.get("metadata", {}).get("tags", []):
            cell["source"] = "".join(cell["source"]).replace('glued("dist_ratio_64_100g") > 1',
                                                             'glued("dist_ratio_64_100g") < 1')
    false = tmp_path / "distributed.ipynb"
    false.write_text(json.dumps(nb))
    with pytest.raises(words.NoLongerTrue, match="dearer than backprop's on 100 Gbit/s"):
        words.run_checks(false)


def test_a_check_may_use_only_what_the_page_glued(tmp_path):
    nb = {"cells": [{"cell_type": "code", "metadata": {"tags": [words.CHECK_TAG]}, "outputs": [],
                     "source": "check(glued('never_glued') > 0, 'a sentence')"}]}
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(nb))
    with pytest.raises(KeyError, match="glued nothing as 'never_glued'"):
        words.run_checks(path)


def test_glued_values_read_back_as_the_numbers_and_words_they_were(tmp_path):
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": "", "outputs": [
        {"output_type": "display_data", "metadata": {"scrapbook": {"name": k, "mime_prefix": "application/papermill.record/"}},
         "data": {"application/papermill.record/text/plain": v}} for k, v in
        [("n", "1863690"), ("r", "0.5512"), ("w", "'holds'"), ("x", "nan"), ("l", "[1, 2]"),
         ("d", "{'CNN': 0.3, 'MLP': nan, 'logreg': -inf}"), ("code", "__import__('os').getcwd()")]]}]}
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(nb))
    values = words.glued_in(path)
    assert values["n"] == 1863690 and values["r"] == 0.5512 and values["w"] == "holds" and values["l"] == [1, 2]
    assert values["x"] != values["x"]   # nan
    assert values["d"]["CNN"] == 0.3 and values["d"]["MLP"] != values["d"]["MLP"] and values["d"]["logreg"] == -float("inf")
    assert values["code"] == "__import__('os').getcwd()"   # the control: anything but a literal stays text
    with pytest.raises(words.NoLongerTrue, match="“a sentence”"):
        words.check(False, "a sentence")


READING = ["intro.md", "glossary.md", "related.md"] + [p.name for p in book_tool.chapters()]


@pytest.mark.parametrize("page", READING)
def test_the_reading_pages_keep_every_sentence_under_forty_words(page):
    """One idea a sentence: no written sentence of a reading page runs past 40 words."""
    assert words.long_sentences(ROOT / "book" / page) == []


def test_a_long_sentence_is_found_and_maths_or_a_glued_number_counts_as_one_word(tmp_path):
    page = tmp_path / "p.md"
    long = " ".join(["Word"] + ["word"] * 40) + "."
    page.write_text("# Title\n\nShort one with $a + b = c$ and {glue:text}`x:.2f` in it. " + long + "\n\n| a | b |\n")
    assert words.long_sentences(page) == [long]   # the control: 41 words is caught
    assert len(words.sentences("Short one with $a + b = c$ and {glue:text}`x:.2f` in it.")[0].split()) == 8


def test_a_chapter_opened_alone_skips_the_checks_that_read_other_pages(tmp_path):
    """On Colab a chapter runs without the other pages beside it: the verdict's checks of the
    introduction's sentences, which read other pages' numbers, are skipped rather than failing the
    reader's run; beside the other pages (the control) they run."""
    import shutil
    alone = tmp_path / "verdict.ipynb"
    shutil.copy(ROOT / "book" / "verdict.ipynb", alone)
    in_place = words.run_checks(ROOT / "book" / "verdict.ipynb")
    assert 0 < words.run_checks(alone) <= in_place - 8   # its own checks run; the intro's 8 or more are skipped


def test_each_canonical_quantity_is_quoted_with_the_one_value_its_page_measured(tmp_path):
    """One number per quantity: every page that quotes a canonical quantity (words.CANONICAL) glues
    the canonical page's value. The control: a verdict page whose MLP step ratio was measured again
    (a different number) is caught, naming the quantity and both pages."""
    assert words.quoted_differently(ROOT / "book") == []
    import shutil
    for page in {k.split("::")[0] for source, quotes in words.CANONICAL.values() for k in [source, *quotes]}:
        shutil.copy(ROOT / "book" / page, tmp_path / page)
    nb = json.loads((tmp_path / "verdict.ipynb").read_text())
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            if output.get("metadata", {}).get("scrapbook", {}).get("name") == "c3_mlp":
                output["data"]["application/papermill.record/text/plain"] = "2.07"
    (tmp_path / "verdict.ipynb").write_text(json.dumps(nb))
    assert [q[:2] for q in words.quoted_differently(tmp_path)] == [("S_f/S_b, MLP", "verdict.ipynb::c3_mlp")]


def test_the_practitioners_table_of_methods_names_every_method_make_method_takes():
    """book/your_model.ipynb's table of method names, written by hand, against the registry; the
    control: a registry with one more method is caught."""
    import re
    import fglib
    text = words.written_text(ROOT / "book" / "your_model.ipynb")
    table = text.split("| name | method | what it is for |")[1].split("\n\n")[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+?) \|", table, re.M))
    assert rows == {name: fglib.registry.label(name) for name in fglib.METHODS}
    assert set(rows) != set(fglib.METHODS) | {"fg_new"}


def test_the_glossary_quotes_the_grading_rules_thresholds():
    """The glossary states the rules' thresholds in words; they must be the ones grading uses.
    Control: a glossary with another threshold is caught."""
    import re
    from fglib.book import grading
    text = (ROOT / "book" / "glossary.md").read_text()

    def stated(term, text):
        entry = text.split(f"\n{term}\n", 1)[1].split("\n\n", 1)[0]
        return [float(p) / 100 for p in re.findall(r"(\d+(?:\.\d+)?)%", entry)]

    assert grading.LEVELLED in stated("levelled off", text)
    assert grading.FROZEN in stated("schedule spent", text)
    assert grading.FROZEN not in stated("schedule spent", text.replace("spent 90% or more", "spent 80% or more"))
