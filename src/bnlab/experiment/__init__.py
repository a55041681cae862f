"""Data, model, training loop, BN kernel, internals: the only Keras code beside `plugins/`."""
