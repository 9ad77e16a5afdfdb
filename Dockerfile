# seq2seq-serve in a container: the CPU build of PyTorch (pinned in constraints.txt) and the
# package, serving a model directory mounted at /model.
#
#   docker build -t seq2seq-serve --build-arg TORCH_INDEX_URL=<PyTorch's CPU wheel index> .
#   docker run --rm -p 8000:8000 -v "$PWD/outputs/run/model:/model:ro" seq2seq-serve
#
# TORCH_INDEX_URL: PyTorch publishes CPU-only wheels on an index of its own; without it pip takes
# the default torch wheel, which on Linux is the CUDA build with several GB of GPU libraries.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY constraints.txt pyproject.toml README.md ./
RUN pip install --constraint constraints.txt ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch
COPY seq2seq ./seq2seq
COPY conf ./conf
# Editable, like the Makefile's install: the commands find their configs in /app/conf.
RUN pip install --constraint constraints.txt -e .

# A user without privileges; the model is read-only.
RUN useradd --system --uid 10001 seq2seq
USER seq2seq
EXPOSE 8000
# 0.0.0.0 inside the container; `docker run -p 127.0.0.1:8000:8000` keeps it on the host's localhost.
ENTRYPOINT ["seq2seq-serve", "host=0.0.0.0", "port=8000"]
CMD ["model=/model"]
