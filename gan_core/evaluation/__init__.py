"""Evaluation: the offline domain classifier (lenet feature space, labelled data), the label-free domain encoder
(simclr feature space, any data) and their own training step, torch-fidelity metrics, the generation and
translation evaluators, and the evaluation context the metrics hold in."""
