# npuyolo: `make demo` runs the main job on synthetic signs, `make test` runs the test suite.
PY ?= python3
OUT ?= demo_out

.PHONY: install demo test bench

install:
	$(PY) -m pip install -q -e ".[dev]"

demo: install
	bash scripts/demo.sh $(OUT)

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) bench/train_overhead.py
