"""An example third-party ddbench plugin package (see ddbench's docs/plugins.md)."""
