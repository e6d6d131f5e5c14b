# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Both create/reuse .venv and install what they need; re-running skips what is done.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/moesweep launch --space search_spaces/quick.yaml

test: $(STAMP)
	bash .ci/install_chromium.sh
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache
