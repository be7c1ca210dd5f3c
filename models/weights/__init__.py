"""Weight importers: turn the files registry packages ship into PyTorch state dicts."""
