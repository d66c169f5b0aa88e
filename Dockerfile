# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image (RocksDB needs clang for
# bindgen, tonic needs protoc), ship only the binary on Debian slim.
#   docker build -t keyward .
#   docker run --rm -p 50051:50051 -v keyward-data:/var/lib/keyward \
#       -v $PWD/keyward.toml:/etc/keyward/keyward.toml:ro \
#       -v $PWD/root.key:/etc/keyward/root.key:ro keyward

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libclang-dev protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin keyward \
 && install -D -m 0755 target/release/keyward /out/keyward \
 && strip /out/keyward

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 keyward \
 && useradd --system --uid 10001 --gid keyward --home-dir /var/lib/keyward --shell /usr/sbin/nologin keyward \
 && install -d -m 0700 -o keyward -g keyward /var/lib/keyward /run/keyward
COPY --from=build /out/keyward /usr/local/bin/keyward
USER 10001:10001
VOLUME ["/var/lib/keyward"]
# gRPC, plaintext health (kubelet probes), metrics
EXPOSE 50051 8081 9090
ENTRYPOINT ["/usr/local/bin/keyward"]
CMD ["server", "--config", "/etc/keyward/keyward.toml", "--log-format", "json"]
