"""The oneSuite transform library: a node's root as an archive or image (export), and whole
layouts converted between SystemImager and oneSIS (convert).

Everything here reads roots through the pure `View` (the same answers the mount gives) and
streams: a root is walked lazily, one directory listing at a time, and written as it is read.
"""
