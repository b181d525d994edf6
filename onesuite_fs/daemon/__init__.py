"""The serving side: the inode table over the core's View, the pyfuse3 adapter, generations
and reloads, the watcher, the control socket and the mount's life cycle. Only the adapter and
the mount import pyfuse3 and trio."""
