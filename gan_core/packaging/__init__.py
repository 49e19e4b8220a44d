"""Packages: a trained network as safetensors + JSON (generator.json / translator.json), saved atomically and
loaded without unpickling anything."""
