.PHONY: demo test check clean

# Run the main job locally: a narrated demo on embedded stand-ins (installs what it needs first).
demo:
	@scripts/bootstrap.sh app
	@.venv/bin/ecr-automation demo

# Run every check and test (installs what it needs first). CI runs exactly this.
test:
	@scripts/check.sh

check: test

clean:
	rm -rf .venv .venv-tools .venv-py311 .sam-build .pytest_cache .mypy_cache .ruff_cache
