# The two commands of the README. Everything installs into .venv from pyproject.toml.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test bench-smoke test-launcher lint schema bench clean

run: $(VENV)/.installed
	$(BIN)/tfscale run configs/quickstart.yaml

# three processes (pytest-xdist), a test module in one: that keeps both CPUs of a 2-core
# machine busy (Ray nodes, TensorFlow processes); more only add contention (benchmarks/README)
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n 3 --dist loadfile

# CI runs these once, each in its own step; `make test` leaves them out (pytest markers):
# the benchmarks' short versions, and `ray up`/`submit`/`down` of cluster/localhost.yaml (root,
# sshd, rsync; it installs the project and TensorFlow into a fresh venv: minutes)
bench-smoke: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -m bench

test-launcher: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -m launcher

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks && $(BIN)/ruff format --check src tests benchmarks

bench: $(VENV)/.installed
	for b in fidelity loop_overhead sweep scale cluster_scaling multiworker collectives; do $(BIN)/python benchmarks/$$b.py || exit 1; done

schema: $(VENV)/.installed
	$(BIN)/tfscale validate --schema > schema/experiment.schema.json

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[cpu]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[cpu,test]'
	touch $@

clean:
	rm -rf $(VENV) results .pytest_cache
