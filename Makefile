# The two commands a newcomer needs: `make localnet` and `make test`.
# Both install whatever is missing first (CometBFT, Kubo, the Python venv);
# installs are cached outside the clone, so a second run is quick.

PY := .venv/bin/python
GRADCHAIN := .venv/bin/gradchain
PYTEST_ARGS ?=
# Genesis model of a new localnet: smollm2 (SmolLM2-135M-Instruct, LoRA rounds), tiny (the KJV GPT) or test.
MODEL ?= smollm2

.PHONY: install install-system install-browser install-go install-python proto localnet localnet-status localnet-stop localnet-reset test test-unit test-e2e bench clean

install: install-system install-go install-python

# The genesis corpus: the KJV text that Debian's bible-kjv-text ships, read with `bible`.
install-system:
	@command -v bible >/dev/null && [ -f /usr/lib/bible.data ] || { \
	  echo "installing Debian packages bible-kjv bible-kjv-text (the genesis corpus) ..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq bible-kjv bible-kjv-text >/dev/null; }

# The explorer's browser test drives Debian's Chromium through its chromedriver (selenium, no downloads at test time).
install-browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing Debian packages chromium chromium-driver (the explorer's browser test) ..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

install-go:
	@cometbft/install.sh
	@ipfs/install.sh

install-python:
	@scripts/venv.sh >/dev/null

# Regenerate abci_app/pb from proto/ (tests/unit/test_proto.py checks it is current).
proto: install-python
	$(PY) proto/generate.py

localnet: install
	$(GRADCHAIN) localnet start --model $(MODEL)

localnet-status: install-python
	$(GRADCHAIN) localnet status

localnet-stop: install-python
	$(GRADCHAIN) localnet stop

localnet-reset: install-python
	$(GRADCHAIN) localnet reset

# The whole suite: unit tests, then e2e tests against the real binaries (and a real headless Chromium).
test: install install-browser
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install-python
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: install
	$(PY) bench/tps.py

clean:
	rm -rf bin .venv .pytest_cache build *.egg-info
