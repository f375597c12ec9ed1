"""``python -m ddbench``: the same command line as the ``ddbench`` script."""

from ddbench.cli.main import main

if __name__ == "__main__":
    main()
