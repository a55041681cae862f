"""A sweep's launch, progress and outcomes; the only Optuna code, with the sweeper plug-in."""
