"""Version of the ligerd Python package (kept equal to the CMake project version)."""

__version__ = "0.1.0"
