# seq2seq-serve in a container: the CPU build of PyTorch (pinned in constraints.txt) and the
# package in a virtualenv, serving a model directory mounted at /model, as a user without
# privileges.
#
#   docker build -t seq2seq-serve --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#   docker run --rm -p 127.0.0.1:8000:8000 -v "$PWD/outputs/run/model:/model:ro" seq2seq-serve
#
# Arguments after the image replace `model=/model` and are Hydra overrides of seq2seq-serve (the
# last value of a key wins): `docker run ... seq2seq-serve model=/model port=8080 max_queue=16`.
#
# Build arguments (the defaults are the public behaviour):
#   BASE_IMAGE        python:3.11-slim; any image with python3 (3.10+) and its venv module, such
#                     as the Debian one .ci/container-base.sh builds where no base image can be
#                     pulled.
#   TORCH_INDEX_URL   PyTorch publishes CPU-only wheels on an index of its own; without it (and
#                     without TORCH_FIND_LINKS) pip takes the default torch wheel, which on Linux
#                     is the CUDA build with several GB of GPU libraries.
#   TORCH_FIND_LINKS  a folder of wheels pip looks in first (pip's --find-links), e.g. a local CPU
#                     wheel of torch served on 127.0.0.1 during `docker build --network host`, as
#                     tests/test_container.py does. A URL, not a path: the wheel then never becomes
#                     part of the build context or of a layer.
#
# Two stages: the build one installs into /opt/venv; the image gets that folder alone (no pip
# cache, no sources, no build tools). The instructions are few and ordered for the vfs storage
# driver of CI, which copies the whole file system (twice) for every instruction, settings
# included: every instruction after a large layer costs tens of seconds there, so the build stage
# installs everything in one step and the image's settings come before its one large layer.
# (A step of its own for the dependencies would stay cached while only the code changes, but under
# vfs the extra steps after it cost more than reinstalling.)
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG TORCH_INDEX_URL="" TORCH_FIND_LINKS=""
COPY constraints.txt pyproject.toml README.md /src/
COPY seq2seq /src/seq2seq
# torch first and pinned, from the CPU index or folder when given; then the package, not editable
# (the configs are package data, so the image needs no checkout).
RUN export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --quiet --constraint /src/constraints.txt \
      ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} ${TORCH_FIND_LINKS:+--find-links "$TORCH_FIND_LINKS"} torch \
 && /opt/venv/bin/pip install --quiet --constraint /src/constraints.txt /src

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# A user without privileges and without a login; the model is mounted read-only.
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin seq2seq
USER seq2seq
EXPOSE 8000
# 0.0.0.0 inside the container; `docker run -p 127.0.0.1:8000:8000` keeps it on the host's
# localhost. seq2seq-serve warns that no API key is set: set SEQ2SEQ_API_KEY (docker run -e)
# before publishing the port beyond localhost. SIGTERM (docker stop) stops it gracefully, exit 0.
ENTRYPOINT ["seq2seq-serve", "host=0.0.0.0", "port=8000"]
CMD ["model=/model"]
COPY --from=build /opt/venv /opt/venv
