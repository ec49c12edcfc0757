# One image for graflow's worker nodes and its producer; GRAFLOW_MODE picks the role.
#
#   docker build -t graflow:local .
#   docker run -e REDIS_HOST=redis -e GRAFLOW_SECRET graflow:local            # a worker node
#   docker run -e REDIS_HOST=redis -e GRAFLOW_SECRET \
#              -e GRAFLOW_MODE=producer -e GRAFLOW_TARGET=examples.word_count:build graflow:local
#
# No secret is baked in: GRAFLOW_SECRET (or a mounted GRAFLOW_SECRET_FILE) and any Redis
# password arrive with the environment at run time. docker-compose.yml shows the topology.
# A pinned patch release of the base image (pin its digest too where builds must repeat
# exactly: FROM python:3.11.11-slim-bookworm@sha256:...).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# graflow from the source tree: only what the package build reads, then the tree goes.
WORKDIR /build
# constraints.txt pins every runtime dependency to the versions the tests ran with.
COPY pyproject.toml README.md constraints.txt ./
COPY graflow ./graflow
RUN pip install --constraint constraints.txt . && rm -rf /build

# Workflows live under the working directory, so a `module:attr` GRAFLOW_TARGET imports the
# same way in the producer and in every worker (tasks travel by reference). Root owns them.
WORKDIR /app
COPY examples ./examples
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin graflow
USER 10001:10001

ENV GRAFLOW_MODE=worker

# Healthy: Redis answers PING and, on a worker, this node's heartbeat is fresh.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "graflow.container", "--health"]

# Exec form, no shell in between: `docker stop`'s SIGTERM reaches graflow, which drains.
ENTRYPOINT ["python", "-m", "graflow.container"]
