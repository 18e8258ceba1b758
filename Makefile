# The project's tasks. `make test` is the README's test command and what CI runs (`bash .ci/run`):
# it installs everything the tests need, checks the code, then runs the whole suite.
# Python is python3 unless PYTHON is set; PYTEST_ARGS narrows the run (`make test PYTEST_ARGS='-k kafka'`).
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: test ci install system-deps deps lint pytest demo live-demo clean

test: install deps lint pytest

ci: test

# The Python packages of the project and its test and lint extras.
install:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[test,lint]'

# Debian packages (redis-server, promtool, amtool, mvn) with apt-get where one is missing.
system-deps:
	bash scripts/system_deps.sh

# Everything outside Python, each step skipped when its result is already there:
# the Debian packages; the Java pieces for Kafka and Flink (broker, Beam expansion service,
# Flink job server) from Maven Central with mvn; Flink 1.19.3 itself from PyPI; Go tools
# (kustomize, terraform and its stand-in provider) from the module proxy; checkov and the
# BigQuery emulator in virtualenvs of their own; all into .cache/.
deps: system-deps
	$(PYTHON) -m paystream_dev fetch
	$(PYTHON) -m paystream_dev flink fetch
	bash scripts/go_tools.sh
	bash scripts/console_assets.sh
	PYTHON=$(PYTHON) bash terraform/tools.sh
	PYTHON=$(PYTHON) bash scripts/bqemulator.sh

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy beam_pipeline kernels transforms schemas simulator paystream_dev

# The suite alone, for a machine where `make deps` has run.
pytest:
	$(PYTHON) -m pytest $(PYTEST_ARGS)

demo:
	$(PYTHON) -m beam_pipeline

# A live run to watch: broker, Redis, simulator, streaming run on local Flink, the console
# at http://127.0.0.1:8050/ (python -m paystream_dev demo); Ctrl-C stops it all.
live-demo: install deps
	$(PYTHON) -m paystream_dev demo

clean:
	rm -rf paystream-out build dist *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache
