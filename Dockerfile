# Pier's image for users with Docker: the same image `make image` writes as an OCI archive
# without a daemon (dev/image). A static musl binary on scratch, run as a non-root user.
FROM rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl
# ring compiles a little C; the host gcc serves for the musl target (see dev/image).
ENV CC_x86_64_unknown_linux_musl=gcc
WORKDIR /src
COPY . .
RUN cargo build --locked --profile image --target x86_64-unknown-linux-musl --bin pier \
 && printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' > /passwd \
 && printf 'root:x:0:\nnonroot:x:65532:\n' > /group

FROM scratch
COPY --from=build /passwd /etc/passwd
COPY --from=build /group /etc/group
COPY --from=build /src/target/x86_64-unknown-linux-musl/image/pier /pier
USER 65532:65532
ENV RUST_LOG=info
ENTRYPOINT ["/pier"]
CMD ["operator"]
