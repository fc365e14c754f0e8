"""The book's machinery, built on the method in fglib's top-level modules.

    experiments  one call per experiment of the paper: seeded runs of both methods
    sweep        a learning-rate sweep per method
    paper        the numbers the paper reports (quotations, not measurements)
    tables       the paper's numbers beside ours; tables formatted for reading
    style        one figure style for the book
    implementations  every way of taking a forward-gradient step, timed together
    verdict      the six claims, graded from the chapters' saved results
    grading      grades derived from raw runs when they are read (claim 4 the paper's way)
    plots        the figures
    parameters   a chapter's papermill parameters, checked before any work
    report       what a chapter records (device, versions, parameters) and glues into prose
    words        the checks that keep a chapter's written sentences true to its numbers
    runs         long experiments as runs that survive a stop, saved raw as each finishes
"""
from . import experiments, grading, implementations, paper, parameters, plots, report, runs, style, sweep, tables, verdict, words
from .experiments import measure_runtime, run_function, run_training
from .parameters import check_parameters
from .report import environment, glue, load_results, save_results
