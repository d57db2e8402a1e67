"""Where the project's shared data lives: ``../shared`` next to the repository root.

The benchmarks and the tests that use real data find it here and nowhere else, so that no
machine path is written into the repository. ``ESH_KERNELS_SHARED`` overrides the location
(for a checkout whose ``shared/`` folder sits elsewhere).
"""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV_VAR = "ESH_KERNELS_SHARED"


def shared_root():
    """The shared folder: ``$ESH_KERNELS_SHARED`` if set, else ``<repo>/../shared``."""
    return os.path.abspath(os.environ.get(ENV_VAR) or os.path.join(REPO, "..", "shared"))


def shared_path(*parts, required=True):
    """``shared_root()/parts...``. With ``required``, a missing path raises a
    ``FileNotFoundError`` that says what was looked for and how to point elsewhere."""
    path = os.path.join(shared_root(), *parts)
    if required and not os.path.exists(path):
        raise FileNotFoundError(
            f"shared data not found: {path} is missing. The benchmarks expect the project's "
            f"shared/ folder next to the repository root ({os.path.join(REPO, '..', 'shared')}); "
            f"set {ENV_VAR}=/path/to/shared to use another location."
        )
    return path
