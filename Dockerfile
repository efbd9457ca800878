# verdict's container image: the release binary and CA certificates, nothing else, run as
# an unprivileged user. Build with `make image` (docker or podman).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin verdict \
 && install -D -m 0755 target/release/verdict /out/verdict

# distroless/cc: glibc and libgcc (the binary links them) and CA certificates; no shell,
# no package manager. The nonroot tag runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/verdict /usr/local/bin/verdict
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/verdict"]
CMD ["serve", "--tls-cert=/etc/verdict/tls/tls.crt", "--tls-key=/etc/verdict/tls/tls.key", "--policies=/etc/verdict/policies"]
