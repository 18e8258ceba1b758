# The targets CI runs (`bash .ci/run` is `make ci`). Python is python3 unless PYTHON is set.
PYTHON ?= python3

.PHONY: ci install deps lint test demo clean

ci: install deps lint test

install:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[test,lint]'

# Java pieces for Kafka and Flink (broker, Beam expansion service, Flink job server) from
# Maven Central with mvn, Go tools (kustomize) from the module proxy, and the BigQuery
# emulator in its own virtualenv, into .cache/.
deps:
	$(PYTHON) scripts/kafka_local.py fetch
	bash scripts/go_tools.sh
	bash terraform/tools.sh
	PYTHON=$(PYTHON) bash scripts/bqemulator.sh

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy beam_pipeline transforms schemas simulator

test:
	$(PYTHON) -m pytest

demo:
	$(PYTHON) -m beam_pipeline

clean:
	rm -rf paystream-out build dist *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache
