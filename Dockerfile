# syntax=docker/dockerfile:1.7
#
# One image per Gyre service, all from this file (a team builds and ships
# its own service alone):
#
#   docker build --build-arg SERVICE=deployer -t gyre/deployer .
#   docker build --build-arg SERVICE=gyre -t gyre/gyre .          # the CLI (gyre up)
#   docker build --build-arg SERVICE=trainer --target trainer-gpu -t gyre/trainer-gpu .
#
# SERVICE is one of ingest, validation, feature, trainer, evaluator, registry,
# deployer, monitor, dashboard, or gyre. The default target is a static
# binary on distroless (no shell, no package manager, uid 65532); trainer-gpu
# is the trainer on a CUDA PyTorch runtime, for the gpu worker pool, whose
# pipelines train with `algorithm: command` programs such as
# examples/torch/train.py. The tests in tests/deploy_test.go build every
# SERVICE the way this file does and check the manifests against it.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
ARG SERVICE
ARG VERSION=dev
WORKDIR /src
# One go.work workspace: every module is needed to build any service.
# The cache mounts keep modules and compiled packages between builds, so
# copying the whole tree costs one link, not a rebuild.
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    set -eu; \
    case "${SERVICE:-}" in \
      ingest|validation|feature|trainer|evaluator|registry|deployer|monitor|dashboard) pkg="./services/${SERVICE}/cmd/${SERVICE}" ;; \
      gyre) pkg="./cmd/gyre" ;; \
      *) echo "--build-arg SERVICE=<ingest|validation|feature|trainer|evaluator|registry|deployer|monitor|dashboard|gyre> is required (got '${SERVICE:-}')" >&2; exit 2 ;; \
    esac; \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/service "$pkg"

# The gpu pool's trainer: Python and PyTorch with CUDA for command trainers.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime AS trainer-gpu
RUN useradd --uid 65532 --create-home --shell /usr/sbin/nologin gyre
COPY --from=build /out/service /usr/local/bin/trainer
# Command trainers run in the trainer's working directory, so the bundled
# example programs are found under examples/ as the pipelines name them.
COPY --chown=65532:65532 examples/torch /home/gyre/examples/torch
COPY --chown=65532:65532 examples/command /home/gyre/examples/command
WORKDIR /home/gyre
USER 65532:65532
ENV GYRE_HTTP_ADDR=:8080 GYRE_TRAINER_POOL=gpu
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/trainer"]

FROM gcr.io/distroless/static-debian12:nonroot AS service
COPY --from=build /out/service /usr/local/bin/service
# The nonroot user's home: the one directory it may write, where `gyre up`
# (SERVICE=gyre) keeps its .gyre/ data; the services write nothing here.
WORKDIR /home/nonroot
# Every service listens on 8080 inside its container (the defaults outside
# one are 127.0.0.1:808x, one port each, so that they can share a host).
ENV GYRE_HTTP_ADDR=:8080
EXPOSE 8080
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/service"]
