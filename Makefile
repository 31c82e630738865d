# Everyday targets. `make run` and `make test` install what is missing first.
.PHONY: install run test lint plan server bench clean

install:
	./scripts/install.sh

run: install
	.venv/bin/lmpipe run

test: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/python -m pytest -q

lint: install
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

plan: install
	.venv/bin/lmpipe plan

bench: install
	.venv/bin/python -m benchmarks

server: install
	.venv/bin/prefect server start --host 127.0.0.1

clean:
	rm -rf data/artifacts checkpoints/*/
