"""Our models of the posteriordb development suite, one module per posterior (the module
is named after the Stan program, the part of the posterior name after the dash).

Each module defines ``numpyro_model(data)`` and, where Pyro can express the model,
``pyro_model(data)``; both take the data dict of ``posteriordb.load_data`` and return a
model with no arguments, whose sites carry the Stan parameters' names and shapes on the
constrained scale (``posteriordb.flat_draws`` relies on it). The module docstring names the
Stan program it follows (``posterior_database/models/stan/<model>.stan`` in posteriordb)
and any choice the translation had to make. Numerical values: float64 throughout.

Stan's implicit flat priors are ``ImproperUniform`` sites in both PPLs (they add nothing to
the log density). Pyro cannot sample them, so Pyro's default start-up (plate-nesting guess
and ``init_to_uniform``) fails on such a model: give ``max_plate_nesting`` and an
``init_to_value`` start, as ``tests/test_posteriordb_models.py`` does.
"""
