# The two commands: `make run` (set up and run the node on its embedded default) and
# `make test` (set up and run the whole test suite). Both are safe to repeat.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: run test setup system-packages ohif-viewer bench clean migration test-deploy bench-scaleout

system-packages:
	@if [ "$$(id -u)" = 0 ]; then ./deploy/install-system-packages.sh; \
	else echo "not root: skipping Debian packages (dcmtk, orthanc, dicom3tools, dcm2niix, chromium, postgresql)"; fi

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	touch $(STAMP)

# OHIF's prebuilt viewer (npm @ohif/app, pinned) for the real-viewer tests; a no-op once cached.
ohif-viewer:
	./deploy/install-ohif-viewer.sh

setup: system-packages $(STAMP) ohif-viewer

run: setup
	$(VENV)/bin/psma-node serve

# Two workers: most tests wait on sockets and subprocesses, so two keep both cores busy (tests/conftest.py
# schedules by module, and all container tests on one worker). The real-viewer tests then run alone, so that
# the viewer's timing does not depend on the other worker's load (under load OHIF 3.13 failed on a series
# replaced while its images loaded; the tests now wait for the page to settle, see bench/RESULTS.md).
# PYTEST_ARGS goes to both runs.
test: setup
	export PSMA_TEST_POSTGRES_URL=$$(./deploy/ensure-postgres.sh) && \
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider -n 2 --dist loadscope -m "not viewer" $(PYTEST_ARGS) && \
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider -m viewer $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/python -m bench

# Only the container tests (image, compose stack, systemd unit); `make test` runs them too.
test-deploy: setup
	PSMA_TEST_POSTGRES_URL=$$(./deploy/ensure-postgres.sh) $(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/deploy $(PYTEST_ARGS)

# 8 small studies through the compose stack with 1, then 2 worker containers (bench/RESULTS.md).
bench-scaleout: setup
	$(VENV)/bin/python -m bench.bench_scaleout

clean:
	rm -rf var .pytest_cache

# Development: rewrite the initial migration from db/models.py (allowed until the first release).
migration:
	rm -f db/migrations/versions/0001_initial_schema.py
	d=$$(mktemp -d) && $(PY) -c "from alembic import command; from db.session import alembic_config; command.revision(alembic_config('sqlite:///$$d/m.db'), message='initial schema', autogenerate=True, rev_id='0001')" && rm -rf $$d
