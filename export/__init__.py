"""ttfs export: from a trained Keras network to a .ttfs model file.

Submodules that need TensorFlow import it themselves; importing this package (or
export.ttfs_format, the numpy-only model-file writer) never pulls TensorFlow in.
"""
