"""Load and fault harnesses the project owns: run them, read their reports (bench/README.md)."""
