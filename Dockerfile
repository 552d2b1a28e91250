# RunGuard's server image (docs/operations.md shows it with TLS and with sqlite).
#   docker build -t runguard .
#   docker run --rm -p 127.0.0.1:50051:50051 runguard
# Stage 1 installs the dependencies into a virtualenv, in a layer of their own that is
# rebuilt only when pyproject.toml changes, and then RunGuard itself. Stage 2 copies
# that virtualenv onto the same base image and runs it as an unprivileged user.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/runguard
ENV PATH=/opt/runguard/bin:$PATH
WORKDIR /src

# The dependencies and the etcd extra (for --store etcd://), read from pyproject.toml alone.
COPY pyproject.toml ./
RUN python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["etcd"]))' > requirements.txt \
    && pip install -r requirements.txt

# The code. The generated stubs are committed, so nothing is generated here.
COPY README.md LICENSE ./
COPY src/ src/
RUN pip install --no-deps . \
    && runguard --help > /dev/null

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/runguard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# /var/lib/runguard: where a sqlite:// store keeps its file, owned by the runtime user and
# a volume, so it outlives the container.
RUN groupadd --gid 10001 runguard \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin runguard \
    && mkdir -p /var/lib/runguard \
    && chown 10001:10001 /var/lib/runguard
COPY --from=builder /opt/runguard /opt/runguard
# Numeric, so that a runtime can check that it is not root.
USER 10001:10001
VOLUME ["/var/lib/runguard"]
WORKDIR /var/lib/runguard
# 8080: the HTTP front (Connect, Server-Sent Events, the status page), served only when the
# command adds --http-listen 0.0.0.0:8080.
EXPOSE 50051 8080
# runguard health reads what the client verbs read: RUNGUARD_TARGET (127.0.0.1:50051) and,
# for a server with TLS, RUNGUARD_CACERT (with mTLS also RUNGUARD_CERT, RUNGUARD_KEY): pass
# them with -e when the command serves TLS.
HEALTHCHECK CMD ["runguard", "health"]
# SIGTERM (docker stop) drains; a second signal exits at once. A container listens on all its
# interfaces, which RunGuard refuses without TLS or tokens unless told --insecure: publish
# the port on loopback, or run a command with --tls-cert/--tls-key or --auth-tokens.
CMD ["runguard", "serve", "--listen", "0.0.0.0:50051", "--insecure"]
