"""Training recipes: the generic loop, checkpoints, detection data and the GFL objective."""
