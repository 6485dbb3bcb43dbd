"""storage: backing files and the backing directory as they are on disk, without FUSE.

Every I/O on a backing file (backingfile), the IV table cache (ivtable), page groups read
verified and written sealed in crash-safe order (pagestore), EncryptedFile (pagefile) and
the plain-file twin (plainfile), the sealing subprocess (sealworker), copying a file into
another layout or key (transcode), the directory's files by kind and the pre-mount checks
(backingscan), and the directory lock both the daemon and the offline tools take
(backinglock).

May import: errors, log, durable, format, keys, and this package. Never fs or tools.
"""
