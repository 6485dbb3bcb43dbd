"""realmfs: a transparent encrypted file layer for embedded databases.

Files are kept in Realm Core's encrypted page format (AES-256-CBC + HMAC-SHA224
per 4 KiB page, 64-byte key) and shown in plain through a FUSE mount.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # ``realmfs.mounted`` without importing the FUSE binding for every user of the format code
    if name == "mounted":
        from .api import mounted
        return mounted
    raise AttributeError(f"module 'realmfs' has no attribute {name!r}")
