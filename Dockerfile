# A container of the study for clusters and machines without the set-up's Debian packages: the
# same scripts/setup.sh as a Debian machine runs, as root, at build time. UNTESTED: no container
# engine could build it where it was written (no Docker daemon, no image registry); the steps it
# runs are those of scripts/setup.sh, which are tested.
#
#   docker build -t negatives .                                   # torch from PyPI (CUDA build)
#   docker build -t negatives --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu .
#   docker run --rm -v "$PWD/results:/opt/negatives/results" negatives \
#       python -m negatives.book build --profile smoke
#   apptainer build negatives.sif docker-daemon://negatives:latest  # or docker://REGISTRY/negatives
#   apptainer exec --nv --bind /shared/results negatives.sif \
#       python -m negatives.sweep run plan.jsonl --results /shared/results --shard 0/16
FROM python:3.11-slim-bookworm

WORKDIR /opt/negatives
# the working tree without .git (.dockerignore): runs record no commit inside the image
COPY . .

# A torch build of your choice first (PyTorch's CPU index, or one CUDA version's); setup.sh then
# installs the pins of requirements.txt around it, keeping it (2.14.1+cpu satisfies ==2.14.1).
ARG TORCH_INDEX=""
ARG SETUP_FLAGS=""
RUN python3 -m venv .venv \
 && if [ -n "$TORCH_INDEX" ]; then \
      .venv/bin/pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1 \
        --index-url "$TORCH_INDEX"; \
    fi \
 && bash scripts/setup.sh $SETUP_FLAGS \
 && rm -rf /root/.cache /var/lib/apt/lists/*

ENV PATH=/opt/negatives/.venv/bin:$PATH \
    NEGATIVES_PYTHON=/opt/negatives/.venv/bin/python
CMD ["python", "-m", "negatives.runs", "list"]
