# Set-up is two commands: `make train` (the default experiment) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
MODEL_DIR ?= runs/mnist_mlp
# The official MNIST files, when they are beside the repository (offline machines); otherwise TFDS downloads.
MNIST_DIR ?= ../shared/data/mnist
ifneq ($(wildcard $(MNIST_DIR)/t10k-images-idx3-ubyte*),)
MNIST_FLAGS := --config.data.source=idx:$(MNIST_DIR) --config.data.train_split='test[:8000]' --config.data.eval_split='test[8000:]'
endif

.PHONY: install train test test-fast lint clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The data flags go to runs/mnist.flags, for any command: --flagfile=runs/mnist.flags (README "Use").
train: install
	mkdir -p runs && printf '%s\n' $(MNIST_FLAGS) > runs/mnist.flags
	$(BIN)/nntrain train --experiment=mnist_mlp --model_dir=$(MODEL_DIR) --flagfile=runs/mnist.flags
	$(BIN)/nntrain evaluate --model_dir=$(MODEL_DIR)

# Three pytest-xdist workers on two cores, a test module at a time (tests/conftest.py): many tests wait on the
# processes they start or on a timeout, and a third worker keeps both cores busy (2 workers: 830 s with the cores
# 88% busy; 3 workers: 765 s, 97% until the last modules).
test: install
	$(BIN)/pytest -n 3 --dist loadfile --no-loadscope-reorder

# A few minutes: the tests marked `fast`, which touch every package (tests/conftest.py checks that they do).
test-fast: install
	$(BIN)/pytest -m fast -n 2 --dist loadfile --no-loadscope-reorder

lint: install
	$(BIN)/ruff check nntrain experiments tests benchmarks notebooks

clean:
	rm -rf $(VENV) runs exports
