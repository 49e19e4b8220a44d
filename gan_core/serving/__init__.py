"""Serving: the MLflow pyfunc models (generator, translator) and their "models from code" entry files, and the
`ganops generate` / `ganops translate` commands' work."""
