"""End-to-end experiment protocols of the published methods (run by recipes and benchmarks/)."""
