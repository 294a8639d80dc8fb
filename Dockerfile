# syntax=docker/dockerfile:1.7
# The finetune-operator image: the kopf operator and the shared API (finetune_api), and
# nothing of the trainer, neither its code nor its stack (no torch). Built by `make build`;
# what it installs is proven without Docker by tests/images/test_operator_lock.py, which
# installs the same lock file into a fresh venv.

# Debian 13 slim with CPython 3.12, pinned to an exact release.
ARG PYTHON_IMAGE=python:3.12.12-slim-trixie

# --- the project's own wheel (pure Python), built with pinned setuptools/wheel ---------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY requirements/build.txt requirements/build.txt
RUN pip install --no-cache-dir --disable-pip-version-check --require-hashes \
        -r requirements/build.txt
COPY pyproject.toml README.md ./
COPY api/ api/
COPY operator/ operator/
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --no-build-isolation \
        --wheel-dir /wheels .

# --- the runtime ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Every dependency, exactly as locked (hash-checked); then the project without dependencies.
COPY requirements/operator.txt /tmp/operator.txt
RUN python -m venv "$VIRTUAL_ENV" \
    && pip install --no-cache-dir --require-hashes -r /tmp/operator.txt \
    && rm /tmp/operator.txt
COPY --from=wheel /wheels/ /tmp/wheels/
RUN pip install --no-cache-dir --no-deps /tmp/wheels/finetune_operator-*.whl \
    && rm -rf /tmp/wheels \
    && finetune-operator --help > /dev/null

LABEL org.opencontainers.image.title="finetune-operator" \
      org.opencontainers.image.description="Kubernetes operator for LoRA fine-tuning jobs" \
      org.opencontainers.image.licenses="Apache-2.0"

# A numeric non-root user (the chart's operator.uid), so runAsNonRoot can verify it.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["finetune-operator"]
