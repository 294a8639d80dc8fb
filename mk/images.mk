# Container images: `include mk/images.mk` from the Makefile.
#
#   make build                      # both images, loaded into the local Docker engine
#   make push IMAGE_REGISTRY=registry.example.com/ml TAG=0.1.0
#   make lock                       # re-resolve requirements/*.txt against PyPI
#
# The images install requirements/*.txt (hash-checked); `make lock` rewrites them from
# pyproject.toml. Building needs Docker with buildx; the tests prove the lock files
# without it (tests/images).

IMAGE_REGISTRY ?= ghcr.io/finetune-operator
TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
PLATFORMS ?= linux/amd64
OPERATOR_IMAGE ?= $(IMAGE_REGISTRY)/operator:$(TAG)
TRAINER_IMAGE ?= $(IMAGE_REGISTRY)/trainer:$(TAG)
DOCKER ?= docker
BUILDX_FLAGS ?=

.PHONY: build build-operator build-trainer push push-operator push-trainer lock

build: build-operator build-trainer ## Build the operator and trainer images (docker buildx, --load)

build-operator:
	$(DOCKER) buildx build --platform $(PLATFORMS) $(BUILDX_FLAGS) \
		--file Dockerfile --tag $(OPERATOR_IMAGE) --load .

build-trainer:
	$(DOCKER) buildx build --platform $(PLATFORMS) $(BUILDX_FLAGS) \
		--file Dockerfile.trainer --tag $(TRAINER_IMAGE) --load .

push: push-operator push-trainer ## Build and push both images to IMAGE_REGISTRY with TAG

push-operator:
	$(DOCKER) buildx build --platform $(PLATFORMS) $(BUILDX_FLAGS) \
		--file Dockerfile --tag $(OPERATOR_IMAGE) --push .

push-trainer:
	$(DOCKER) buildx build --platform $(PLATFORMS) $(BUILDX_FLAGS) \
		--file Dockerfile.trainer --tag $(TRAINER_IMAGE) --push .

lock: venv ## Re-resolve requirements/{operator,trainer,build}.txt from pyproject.toml (PyPI)
	$(PY) hack/images/lock.py
