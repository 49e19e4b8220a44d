"""Training: the shared loop (loop.Trainer) and what it owns — checkpoints, the EMA, augmentation, batches, data
parallelism, torchrun launching, progress, callbacks — plus the training identity (what makes two trainings the
same). How a family trains one step is the family's (gan_core.models)."""
