# The two commands from the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast verify bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/secureml run poisoning-01 --mitigation labs/poisoning-01/solution.py --out out/poisoning-01

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# What CI checks inside `make test` (tests/test_ci_verify.py), one thread count after the
# other: every scenario recomputed from scratch, JUnit reports in out/verify/.
verify: $(STAMP)
	mkdir -p out/verify
	$(BIN)/secureml verify --no-cache --threads 1 --junit out/verify/threads-1.xml
	$(BIN)/secureml verify --no-cache --threads 2 --junit out/verify/threads-2.xml

bench: $(STAMP)
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
