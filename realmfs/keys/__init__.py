"""keys: the master key, what wraps it and the backing directory's authenticated config.

Key parsing and key files (key), passphrase and recovery slots wrapping the master key
(keyslots), the kernel keyring (keyring), and ``.realmfs.conf`` with its patterns, key check,
key slots and rekey journal (config).

May import: errors, log, durable, format, and this package.
``Key`` and ``parse_key`` are re-exported here: ``from realmfs.keys import Key`` keeps working.
"""

from .key import Key, parse_key  # noqa: F401
