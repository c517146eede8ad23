VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out

.PHONY: install test test-fast mutants demo clean

install: $(STAMP)

$(STAMP): setup.py
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade "pip>=23"
	$(PYTHON) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# pytest-xdist workers, one PyTorch thread each (in the tests' subprocesses too). Three on the CI machine's 2 cores:
# the end-to-end tests spend much of their time waiting for NNI's manager and for processes to start, and a third
# worker fills it (a quiet 2-core run: 5:48 with two, 4:51 with three). Tests that start NNI's manager run one
# after another on one worker (tests/conftest.py: SERIAL_FILES).
TEST_WORKERS ?= 3
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q -n $(TEST_WORKERS)

# The unit tests (tests/unit: one module's tests, in-process); make test also runs tests/e2e.
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q -n $(TEST_WORKERS) -m "not slow" tests/unit

# Mutation testing (mutmut; modules and fast tests in setup.cfg): plants one small bug at a time and runs
# the tests that cover it. Hours on 2 cores for every module: narrow it with e.g.
#   make mutants MUTANTS='strategies.dominance* search_spaces.budget*'
MUTANTS ?=
mutants: $(STAMP)
	$(VENV)/bin/mutmut run $(MUTANTS)
	$(PYTHON) tools/mutation_summary.py $(MUTANTS)

# Search the multi-path ResNet space on digits under a 30k-parameter budget, then retrain the best.
demo: $(STAMP)
	$(VENV)/bin/mpn-nas search --space resnet --dataset digits --strategy evolution --trials 8 --epochs 4 \
		--max-params 30000 --seed 0 --out $(DEMO_OUT)/search --force
	$(VENV)/bin/mpn-nas retrain $(DEMO_OUT)/search/best_arch.json --dataset digits --epochs 30 --seed 0 \
		--out $(DEMO_OUT)/retrain --export onnx --quiet --force
	@echo "search artifacts: $(DEMO_OUT)/search (best_arch.json, trials.csv, summary.json, pareto.png)"
	@echo "retrained model:  $(DEMO_OUT)/retrain (model.pt, model.onnx, metrics.json)"

clean:
	rm -rf $(VENV) $(DEMO_OUT) *.egg-info mutants
