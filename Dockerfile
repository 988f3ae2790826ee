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

# The Prometheus JMX exporter java agent broker Pods run (copied into them by an init container
# of this image, `pier install-agent`); the version dev/setup pins.
FROM maven:3.9-eclipse-temurin-21 AS agent
ARG JMX_EXPORTER_VERSION=1.0.1
RUN mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
      -Dartifact=io.prometheus.jmx:jmx_prometheus_javaagent:${JMX_EXPORTER_VERSION} -DoutputDirectory=/agent \
 && mv /agent/jmx_prometheus_javaagent-${JMX_EXPORTER_VERSION}.jar /agent/jmx_prometheus_javaagent.jar

FROM scratch
COPY --from=build /passwd /etc/passwd
COPY --from=build /group /etc/group
COPY --from=build /src/target/x86_64-unknown-linux-musl/image/pier /pier
COPY --from=agent /agent/jmx_prometheus_javaagent.jar /opt/pier/jmx_prometheus_javaagent.jar
USER 65532:65532
ENV RUST_LOG=info
ENTRYPOINT ["/pier"]
CMD ["operator"]
