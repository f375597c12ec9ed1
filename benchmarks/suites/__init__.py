"""Suite files (``*.toml``), installed as the ``ddbench_suites`` package data; see ``ddbench/suites.py``."""
