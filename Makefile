# The targets CI runs (`bash .ci/run` is `make ci`). Python is python3 unless PYTHON is set.
PYTHON ?= python3

.PHONY: ci install lint test demo clean

ci: install lint test

install:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[test,lint]'

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
