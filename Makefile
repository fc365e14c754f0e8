# Two commands do everything on a fresh machine:
#   make book   install, execute chapters that have no outputs, render the HTML (_build/html)
#   make test   install, run the test suite (it executes every chapter with its smoke settings)
# and a third opens the chapters interactively:
#   make lab    install, start JupyterLab on book/ (fglib importable, the data folder found)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# MNIST: the offline copy beside the checkout when there is one, else ./data (downloaded).
FGLIB_DATA ?= $(if $(wildcard ../shared/data/MNIST/raw),$(abspath ../shared/data),$(abspath data))
export FGLIB_DATA

.PHONY: book test lab chapters-full clean

book: $(VENV)/.installed
	$(BIN)/python tools/book.py execute --mode missing
	$(BIN)/jupyter-book build . --builder html -W -n --keep-going
	@echo "The book is in _build/html/index.html"

test: $(VENV)/.installed
	$(BIN)/python -m pytest

lab: $(VENV)/.installed
	$(BIN)/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/book $(if $(filter 0,$(shell id -u)),--allow-root)

# Re-run every chapter with its full settings, in place (long; a GPU helps).
chapters-full: $(VENV)/.installed
	$(BIN)/python tools/book.py execute --mode full

$(VENV)/.installed: requirements.txt requirements-book.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

clean:
	rm -rf _build
