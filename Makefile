# The two commands of the README: `make demo` and `make test`. Both install what is missing first.
# `make test` runs the demo's smoke check before the test suite, so the suite's summary comes last.
.PHONY: setup test demo image bench

setup:
	dev/setup

test: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	dev/image
	dev/demo --smoke
	cargo test --workspace --locked

demo:
	dev/demo

# Pier's container image as an OCI archive (target/pier-image.tar), without a Docker daemon.
image:
	dev/image

# Benchmarks (release builds, real components): writes docs/performance.md. See dev/bench.
bench:
	dev/bench
