# Build: docker build -t sitewatch .
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libssl-dev pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home sitewatch
COPY --from=build /src/target/release/sitewatch /usr/local/bin/sitewatch
COPY config/ /etc/sitewatch/
USER sitewatch
ENV SITEWATCH_CONFIG=/etc/sitewatch/sitewatch.example.toml
ENTRYPOINT ["/usr/local/bin/sitewatch"]
CMD ["run"]
