# syntax=docker/dockerfile:1
# The limiter image: `portcullis-limiter`, built in the Rust image, run on Debian slim as a
# non-root user. Build from the repository root:
#   docker build -f deploy/docker/portcullis-limiter.Dockerfile -t portcullis-limiter:local .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p portcullis-limiter --bin portcullis-limiter \
    && cp target/release/portcullis-limiter /usr/local/bin/portcullis-limiter

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/portcullis-limiter limiter
COPY --from=build /usr/local/bin/portcullis-limiter /usr/local/bin/portcullis-limiter
USER 10001:10001
WORKDIR /var/lib/portcullis-limiter
# gRPC (checks, quota management, health), Prometheus metrics.
EXPOSE 9090 9091
ENTRYPOINT ["portcullis-limiter"]
CMD ["serve", "--listen", "0.0.0.0:9090", "--metrics-listen", "0.0.0.0:9091", "--tokens", "/secrets/limiter-tokens.yaml"]
