"""The configs this package ships, found by Hydra as `pkg://bnlab.conf`."""
