"""The experiments this project ships, built only through the pipeline's plug-in points.

Each module holds a `_target_` and its schema, and keeps Keras imports inside its
functions, so reading the schemas (every launch does) starts no backend:

- `cnn`: the blog's CNN, with and without BN (the BN study's model);
- `mlp`: a small MLP, with and without BN (the digits example's model);
- `mnist`: the 5,000 embedded MNIST digits, or full MNIST;
- `digits`: scikit-learn's 8x8 digits;
- `bn_switch`: the settings and the layer block both models share.
"""
