# syntax=docker/dockerfile:1
# The gateway image: `portcullis`, built in the Rust image, run on Debian slim as a non-root
# user. Build from the repository root:
#   docker build -f deploy/docker/portcullis.Dockerfile -t portcullis:local .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p portcullis --bin portcullis \
    && cp target/release/portcullis /usr/local/bin/portcullis

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/portcullis portcullis
COPY --from=build /usr/local/bin/portcullis /usr/local/bin/portcullis
USER 10001:10001
WORKDIR /var/lib/portcullis
# The data directory holds the node id and the audit journal: keep it on a volume.
ENV PORTCULLIS_DATA_DIR=/var/lib/portcullis
# Data plane, admin (health, metrics, management API).
EXPOSE 8080 8081
ENTRYPOINT ["portcullis"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--admin-listen", "0.0.0.0:8081"]
