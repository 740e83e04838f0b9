# Feature Studio: `make demo` renders channels of the embedded model headless; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pinned for this project's machines (local wheels); pyproject.toml only sets lower bounds.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test install system-deps

$(BIN)/studio: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PINS) || $(BIN)/pip install -q torch torchvision
	$(BIN)/pip install -q -e ".[dev,viewer,concepts,ray]"
	touch $@

install: $(BIN)/studio

demo: install
	$(BIN)/studio render efficientnet_lite0 blocks.4:0 blocks.4:1 blocks.4:2 blocks.4:3 blocks.4:4 blocks.4:5 \
		'logits:"Egyptian cat"' --steps 128 --size 128 --out out/demo

system-deps:
	@command -v xvfb-run >/dev/null || (apt-get update -qq && apt-get install -y -qq xvfb libgl1-mesa-dri libegl1 \
		libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
		libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3)

test: install system-deps
	xvfb-run -a -s "-screen 0 1600x1200x24" $(BIN)/python -m pytest -q
