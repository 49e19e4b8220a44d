"""flows: orchestration only — Prefect flows and tasks, DVC calls, the MLflow registry policy, the `ganops` CLI."""
