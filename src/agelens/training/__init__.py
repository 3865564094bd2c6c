"""Training age networks on a CPU: the network in torch, its objective, augmentation, the
loop, and the job from a dataset to a calibrated bundle."""
