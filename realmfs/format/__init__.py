"""format: Realm Core's encrypted page format and realmfs's header page, as pure functions.

Page and IV-table arithmetic (layout), AES-256-CBC of whole pages (aescbc), IVs, MACs and
seal/open of one page (pagecipher), the header page (fileheader), what a file's first bytes
say it is (detect) and the damage rulebook with its one message table (damage).

May import: the top-level errors and log modules, and this package. Nothing does file
system or FUSE work here, with one exception: detect reads the first page of a path it is
given (``first_page``, ``looks_like_realm_ciphertext``).
"""
