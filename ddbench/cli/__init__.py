"""The ``ddbench`` command line (click): thin commands over the other layers; nothing imports it but ``python -m ddbench``."""
