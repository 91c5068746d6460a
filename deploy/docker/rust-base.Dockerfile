# A local stand-in for rust:1.95-slim-bookworm, built by base.sh from the local Debian base and
# the build machine's Rust toolchain (copied into the build context as toolchain/), trusting the
# certificate authorities the machine added itself (ca/, from /usr/local/share/ca-certificates),
# so that cargo reaches crates.io through the same TLS-inspecting proxy the host uses, if any.
ARG BASE_IMAGE=shoal-base/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
COPY toolchain/ /usr/local/rust/
ENV PATH=/usr/local/rust/bin:/usr/local/cargo/bin:$PATH \
    CARGO_HOME=/usr/local/cargo
RUN rustc --version && cargo --version
