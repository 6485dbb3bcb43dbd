"""fs: the mount: FUSE operations over a backing directory and the daemon's lifecycle.

Directory-relative operations (backingdir), link attributes (linkattrs), the open-file
table (openfiles), the thin FUSE operations with one errno wrapper (fuseops), the FUSE
library they run on (fusebinding: the only module importing mfusepy or fusepy), the checks
before a mount and its FUSE options (mountchecks), the daemon (daemon), its launcher
(launcher), unmounting and waiting for the seal (unmounting), the /proc mount table
(mounttable), running fusermount (fusermount), the daemon's logs (logfiles), request
statistics (reqstats), and the refusal of a backing directory inside another (nesting).

May import: errors, log, durable, format, keys, storage, and this package. Never tools.
"""
