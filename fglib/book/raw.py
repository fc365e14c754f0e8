"""One chapter's raw tables: what a sitting saved, read back; what it measured, saved.

Every chapter that measures keeps its observations as tidy tables under
`<results>/raw/<chapter>/<name>` (see runs.save_table: each row carries the device, torch
version and threads it was measured with). A chapter opens its tables once,

    raw = RawTables("finetune", results_dir, device, smoke=smoke, remeasure=remeasure)

and then

    raw.read("finals.csv")          # the saved table, without the device stamps (empty if none)
    raw.read("k_finals.csv", chapter="variance")   # another chapter's, from the same folder
    raw.kept("finals.csv")          # what a resumed sitting keeps: stamped, empty if remeasure
    raw.save("finals.csv", table)   # stamped with this process's device, torch and threads
    raw.measured_on("finals.csv")   # the device(s) its rows were measured on, for the prose
    raw.lack(["a.csv", "b.csv"])    # remeasure, or any of them unsaved: measure all of them
    raw.lack(["a.csv"], settings)   # ... or measured with other settings (raw.save_settings(settings))
    raw.sweep_saver("fashion-")     # save(curves, finals) for a sweep that saves as it goes

A smoke run reads and writes a temporary folder, so that tests never touch the book's results;
GPU results sit beside the CPU ones (report.results_folder), never over them.
"""
import json
import tempfile

import pandas as pd

from ..device import device_name
from .grading import devices_said
from .report import results_folder
from .runs import load_table, save_table

STAMPS = ["device", "torch", "threads"]


class RawTables:
    def __init__(self, chapter, results_dir, device, smoke=False, remeasure=False):
        self.chapter, self.device, self.remeasure = chapter, device, remeasure
        self.folder = tempfile.mkdtemp() if smoke else results_folder(results_dir, device_name(device))

    def read(self, name, stamps=False, chapter=None):
        """The saved table (another chapter's, beside this one's, with `chapter`), without the
        device stamps unless asked; empty if it was never saved."""
        table = load_table(self.folder, chapter or self.chapter, name)
        return table if stamps else table.drop(columns=STAMPS, errors="ignore")

    def kept(self, name):
        """The saved rows a resumed sitting keeps, each with its own stamps; none if remeasure."""
        return pd.DataFrame() if self.remeasure else self.read(name, stamps=True)

    def measured_on(self, *names):
        """Where the saved rows of these tables were measured: one device's name, or each of them
        joined with 'and' when the tables were extended across sittings on different ones."""
        return devices_said(d for name in names
                            for d in self.read(name, stamps=True).get("device", pd.Series(dtype=str)).dropna())

    def save(self, name, table):
        save_table(self.folder, self.chapter, name, table, self.device)

    def lack(self, names, settings=None):
        """True when the set must be measured: remeasure, or any table of it unsaved (all or
        nothing, so that the tables always come from one consistent sitting), or, given the
        `settings` the set depends on, when they are not those it was measured with (saved
        beside it by save_settings): tables read back always answer the parameters asked."""
        return (self.remeasure or any(self.read(name).empty for name in names)
                or (settings is not None and self.saved_settings() != _plain(settings)))

    def save_settings(self, settings):
        """Save the parameters a set was measured with, as settings.csv (a setting and its value
        in JSON per row), for lack(names, settings) to compare."""
        self.save("settings.csv", pd.DataFrame({"setting": list(settings),
                                                 "value": [json.dumps(v) for v in settings.values()]}))

    def saved_settings(self):
        """The settings save_settings saved, as plain JSON values (None if never saved)."""
        table = self.read("settings.csv")
        return None if table.empty else {k: json.loads(str(v)) for k, v in zip(table["setting"], table["value"])}

    def sweep_saver(self, prefix=""):
        """save(curves, finals) as <prefix>curves.csv.gz and <prefix>finals.csv: a sweep calls it
        after each pairing, so that a stopped sweep resumes where it stopped."""
        def save(curves, finals):
            self.save(f"{prefix}curves.csv.gz", curves)
            self.save(f"{prefix}finals.csv", finals)
        return save


def _plain(settings):
    """Settings as JSON gives them back (tuples as lists), to compare with the saved ones."""
    return json.loads(json.dumps(dict(settings)))
