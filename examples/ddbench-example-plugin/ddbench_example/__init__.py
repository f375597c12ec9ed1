"""An example third-party ddbench plugin package (see the README's "Writing a plugin")."""
