"""The real work of each stage, as plain functions: no Prefect here, testable on tiny inputs."""
