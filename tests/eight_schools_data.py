"""The eight schools data (Rubin 1981; posteriordb's ``eight_schools``), shared by the tests:
treatment effects ``Y`` and their standard errors ``SIGMA``, as plain lists so that each test
file makes the array type (NumPy, JAX or torch) and precision it needs."""

Y = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
SIGMA = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]
