# The two commands of the README: `make demo` and `make test`. Both install what is missing first.
.PHONY: setup test demo

setup:
	dev/setup

test: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cargo test --workspace --locked

demo:
	dev/demo
