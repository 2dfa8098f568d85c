"""ligerd's benchmark library: timing and speed-of-light helpers (``common``), the side-by-side
harness (``harness``) and one module of benchmark rows per op. The scripts beside this folder
(bench/run_kernels.py, bench/flce.py, bench/e2e/, bench/micro/) import it; its name is ligerd's
own so that it never hides an installed package."""
