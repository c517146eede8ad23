VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out

.PHONY: install test test-fast demo clean

install: $(STAMP)

$(STAMP): setup.py
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade "pip>=23"
	$(PYTHON) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PYTHON) -m pytest -q

test-fast: $(STAMP)
	$(PYTHON) -m pytest -q -m "not slow"

demo: $(STAMP)
	$(VENV)/bin/mpn-nas retrain examples/archs/digits_routed.json --dataset digits --epochs 15 --out $(DEMO_OUT)/retrain

clean:
	rm -rf $(VENV) $(DEMO_OUT) *.egg-info
