"""Settings shared by the translation (cyclegan) tests."""

TRANSLATION_SETTINGS = {
    "model.arch": "cyclegan",
    "data.target": "mnist5k",
    "registry.model_name": "test-translator",
    "gate.thresholds": {"fid_lenet_a2b": {"max": 1e9}},
    "gate.primary_metric": "fid_lenet_a2b",
    "model.g_width": 4,
    "model.d_width": 4,
    "model.res_blocks": 1,
    "train.loss": "lsgan",
    "train.batch_size": 4,
    "train.semantic_weight": 0.0,  # off: these tests need no judges (tests/test_semantic.py turns it on)
}
"""Overrides that make a tiny translation run from the code's defaults, on the pair_prepared fixture's data."""
