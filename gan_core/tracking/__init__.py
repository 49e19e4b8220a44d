"""Tracking: the MLflow store (store), what goes into a training's run (runs) and the lineage stamped on runs and
model versions (lineage)."""
