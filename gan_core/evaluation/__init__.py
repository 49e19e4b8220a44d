"""Evaluation: the offline domain classifier (lenet feature space), torch-fidelity metrics, the generation and
translation evaluators, and the evaluation context the metrics hold in."""
