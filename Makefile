# The README's two commands: `make demo` and `make test` (both set up first).
.PHONY: setup demo test test-fast clean

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/recstream demo

test: setup
	.venv/bin/python -m pytest

test-fast: setup
	.venv/bin/python -m pytest -m "not engine and not training and not e2e"

clean:
	rm -rf runs .pytest_cache
