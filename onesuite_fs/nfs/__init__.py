"""Serving the per-node roots over NFS: node addresses, export rendering, nfs-ganesha, serve.

Nothing in the core (tree, resolve, layers, stack) imports this package: NFS is a client of the
mount like any other.
"""
