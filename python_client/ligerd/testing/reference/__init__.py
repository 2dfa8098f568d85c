"""Float64 references of ligerd's ops, one module per op family."""
