# authgate container: multi-stage build, slim non-root runtime.
#   docker build -t authgate .
#   docker run -p 8080:8080 -v /path/to/your/config:/etc/authgate:ro \
#              -v authgate-state:/var/lib/authgate authgate
# The image ships no key material. Its default config (the repo's config/authgate.toml)
# trusts only the dev HMAC key, whose secret it reads from AUTHGATE_DEV_SECRET; started
# with neither that variable nor your own config mounted, it exits 1 naming what to set.
# Learned orgs are journalled to the writable volume /var/lib/authgate.
#
# Build arguments (defaults: the images this file has always used):
#   RUST_IMAGE     the build stage's toolchain image
#   RUNTIME_IMAGE  the runtime's base, e.g. a Debian base made from Debian's own packages
#                  where no registry can be reached (deploy/container-smoke.sh does that)
#   BINARY_STAGE   "build" compiles authgate here; "prebuilt" takes prebuilt/authgate from the
#                  build context (a release binary built outside, e.g. by CI) and skips the
#                  build stage: `--target runtime --build-arg BINARY_STAGE=prebuilt`
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG BINARY_STAGE=build

FROM ${RUST_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --bin authgate \
 && strip target/release/authgate

FROM scratch AS prebuilt
COPY prebuilt/authgate /src/target/release/authgate

FROM ${BINARY_STAGE} AS binary

FROM ${RUNTIME_IMAGE} AS runtime
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin authgate \
 && mkdir -p /etc/authgate/keys /var/lib/authgate \
 && chown authgate:authgate /var/lib/authgate
COPY --from=binary /src/target/release/authgate /usr/local/bin/authgate
COPY config/authgate.toml config/partners.toml /etc/authgate/
COPY config/openapi /etc/authgate/openapi/
# In the container: journal to the volume, and let the orchestrator reach the admin port.
RUN sed -i \
      -e 's|^# learned_orgs_file = .*|learned_orgs_file = "/var/lib/authgate/learned-orgs.jsonl"|' \
      -e 's|^admin_listen = "127.0.0.1:9090"|admin_listen = "0.0.0.0:9090"|' \
      /etc/authgate/authgate.toml \
 && grep -q '^learned_orgs_file = "/var/lib/authgate/learned-orgs.jsonl"' /etc/authgate/authgate.toml \
 && chmod -R a-w /etc/authgate
USER authgate
VOLUME ["/var/lib/authgate"]
EXPOSE 8080 9090
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/authgate", "health", "--admin", "127.0.0.1:9090"]
ENTRYPOINT ["/usr/local/bin/authgate"]
CMD ["--config", "/etc/authgate/authgate.toml"]
