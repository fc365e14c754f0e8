"""A pybtex style whose bibliography labels read like the citations in the text
("Baydin et al., 2022"), instead of the alpha style's [BPS+22]."""
from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            # braces protect a name's case in BibTeX ({Orobix}); they are not part of the label
            names = ([" ".join(p.last_names).replace("{", "").replace("}", "") for p in people]
                     or [entry.fields.get("title", "?")[:20]])
            who = names[0] if len(names) == 1 else (f"{names[0]} and {names[1]}" if len(names) == 2
                                                     else f"{names[0]} et al.")
            year = entry.fields.get("year", "")
            yield f"{who}, {year}" if year else who


class AuthorYearStyle(UnsrtStyle):
    default_label_style = AuthorYearLabels


def setup(app):
    register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)
    return {"parallel_read_safe": True}
