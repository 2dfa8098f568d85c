"""Version of ligerd's liger_kernel compatibility distribution.

The public part is the Liger-Kernel API level this shim answers to (transformers needs >= 0.3.0,
TRL >= 0.8.0); the local label says honestly that it is ligerd, and which ligerd version it was
written with (tests/python/test_compat_route.py keeps it equal to ligerd.__version__)."""

LIGER_API_VERSION = "0.8.5"
LIGERD_VERSION = "0.1.0"
__version__ = f"{LIGER_API_VERSION}+ligerd.{LIGERD_VERSION}"
