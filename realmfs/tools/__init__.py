"""tools: the offline commands, run on an unmounted backing directory.

Encrypt and decrypt a tree (offline), verify and repair (verify, repair), crash-safe rekey
(rekey), what a backing directory holds (info), and the progress line (progress).

May import: errors, log, durable, format, keys, storage, and this package. Never fs: a
tool takes the directory lock from storage and never needs FUSE.
"""
