# nmflow: `make demo` runs the whole flow, `make test` runs the test suite. Both set up first.
VENV ?= .venv

.PHONY: setup demo test bench clean

setup:
	@bash tools/setup.sh

demo: setup
	$(VENV)/bin/nmflow demo

test: setup
	$(VENV)/bin/python -m pytest -q -n auto --dist loadgroup

bench: setup
	$(VENV)/bin/nmflow bench

clean:
	rm -rf build
