# npuyolo: `make demo` runs the main job on synthetic signs, `make test` runs the test suite.
# The interpreter: the active venv, else python3 — or, where python3 is a PEP 668 "externally managed" system
# Python (stock Debian/Ubuntu), a project .venv created once (see scripts/pick_python.sh).
PY := $(shell scripts/pick_python.sh)
OUT ?= demo_out
# which Ultralytics distribution a fresh environment gets (an installed one is kept): headless or ultralytics
ULTRALYTICS_EXTRA ?= $(shell $(PY) -c "import importlib.metadata as m; m.version('ultralytics'); print('ultralytics')" 2>/dev/null || echo headless)

.PHONY: install demo test bench test-ray

install:
	$(PY) -m pip install -q -e ".[dev,mlflow,qat,$(ULTRALYTICS_EXTRA)]"

demo: install
	PATH="$$($(PY) -c 'import os, sys; print(os.path.dirname(sys.executable))'):$$PATH" bash scripts/demo.sh $(OUT)

# the core suite; the Ray executor's tests (marker `ray`) run in `make test-ray`, which installs Ray first
test: install
	$(PY) -m pytest -q -m "not ray"

# the Ray executor's tests (tests/test_ray_executor.py, marker `ray`): installs the `ray` extra first
test-ray:
	$(PY) -m pip install -q -e ".[dev,mlflow,qat,ray,$(ULTRALYTICS_EXTRA)]"
	$(PY) -m pytest -q -m ray

bench: install
	$(PY) bench/train_overhead.py
