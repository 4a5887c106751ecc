# The two commands from the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint verify bench wheel clean bubblewrap

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/secureml run poisoning-01 --mitigation labs/poisoning-01/solution.py --out out/poisoning-01

# The grading sandbox's tests need bubblewrap. Install it when we can (root with apt-get);
# otherwise they are skipped, and the run ends with one line saying how many and the fix
# (tests/conftest.py).
bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1 \
		|| { apt-get update -q && apt-get install -y -q bubblewrap; } \
		|| echo "could not install bubblewrap; the sandbox tests will be skipped"

test: $(STAMP) bubblewrap
	$(BIN)/python -m pytest

test-fast: $(STAMP) bubblewrap
	$(BIN)/python -m pytest -m "not slow"

# Lint and type checks (configured in pyproject.toml); .ci/run runs them before the tests.
lint: $(STAMP)
	$(BIN)/ruff check src tests bench labs
	$(BIN)/mypy

# The sdist and the wheel to hand to trainees: no solution, no hidden variant (see setup.py).
wheel: $(STAMP)
	$(BIN)/python -m build --no-isolation --outdir dist

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
