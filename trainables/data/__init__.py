"""Dataset readers of the real file formats, the synthetic demo sets, and the loaders."""
