"""Small shared helpers (files, units, console, progress, digests): import only each other and ``ddbench.errors``, never torch at module level."""
