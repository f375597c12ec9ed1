"""Specs become runs: identity, grids and suites, checks, the pipeline, sweeps and executors; import the engine, the store (``ddbench.results``) and ``ddbench.util``, never the CLI."""
