# Everything a newcomer needs: `make demo` runs the bot against a local X; `make test` tests it.
# Each target builds its own virtual environment first (.venv), from the pinned requirements.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast run demo bench clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

## test: the whole suite (installs what it needs, Python packages and OS packages)
test: $(STAMP)
	scripts/ensure-os-packages redis-server
	$(PY) -m pytest

## test-fast: the tests that start no process or server of their own (a minute or two; not a substitute for `make test`)
test-fast: $(STAMP)
	$(PY) -m pytest -m "not processes" -q

## demo: the whole bot offline: X emulator + gunicorn app:app + register_webhook.py setup + a chat
## (X DMs and X Chat; CHANNEL=telegram, line, messenger or dialogflow chats on that platform instead)
demo: $(STAMP)
	$(PY) scripts/demo.py $(if $(CHANNEL),--channel $(CHANNEL))

## bench: the figures in docs/performance.md (about 3 minutes, loopback only; installs wrk)
bench: $(STAMP)
	scripts/ensure-os-packages wrk
	$(PY) bench/run.py

## run: the bot as production runs it (settings from the environment or .env)
run: $(STAMP)
	$(VENV)/bin/gunicorn app:app

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .demo .bench
