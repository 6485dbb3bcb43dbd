# Sourced by scripts/test.sh and scripts/demo.sh (not run on its own): installs what realmfs needs.
#   apt packages  -> as root through apt-get (the machine's; only those missing, so re-runs are quick)
#   Python        -> a virtual environment .venv/ in the repository (git-ignored), never the
#                    machine's Python: a `pip install -e` there would re-point a system-wide realmfs
#                    at whichever clone ran it. The scripts then run everything with $VENV_PY.
# Call from the repository root: need_apt_packages, then make_venv EXTRAS ("" or "test,bench").

# The apt packages, one place to edit: libfuse3-3 for the mount (mfusepy), fuse3 for
# fusermount3 (what libfuse 3 needs to mount as an unprivileged user; it replaces the fuse
# package and keeps a fusermount link), libfuse2 for the fallback binding (REALMFS_FUSE=2,
# fusepy), keyutils for keyctl (the kernel-keyring key store).
APT_PACKAGES=(fuse3 libfuse3-3 libfuse2 keyutils)

# fusermount3 (libfuse 3, Debian's fuse3) or fusermount (libfuse 2, fuse): the project's Python
# code calls whichever is installed through realmfs.fs.fusermount.
have_fusermount() { command -v fusermount3 >/dev/null 2>&1 || command -v fusermount >/dev/null 2>&1; }

VENV=.venv
VENV_PY=$VENV/bin/python

need_apt_packages() {
    local missing=() p
    if command -v dpkg-query >/dev/null 2>&1; then
        for p in "${APT_PACKAGES[@]}"; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
        done
    fi
    # Debian's python3 makes a venv only with python3-venv (ensurepip) installed
    python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
    [ ${#missing[@]} -gt 0 ] || return 0
    if [ "$(id -u)" != 0 ]; then
        echo "warning: Debian packages missing: ${missing[*]}; run this script once as root to install them" >&2
        return 0
    fi
    echo "== installing ${missing[*]} (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# make_venv EXTRAS: .venv/ with realmfs installed editable (plus the extras); skipped when the
# venv already holds an install made from the same pyproject.toml with these extras (or, for no
# extras, with any).
make_venv() {
    local extras=$1 spec=. hash have
    [ -z "$extras" ] || spec=".[$extras]"
    hash=$(sha256sum pyproject.toml | cut -c1-64)
    have=$(cat "$VENV/.realmfs-installed" 2>/dev/null || true)
    if [ -x "$VENV_PY" ] && { [ "$have" = "$hash $extras" ] || { [ -z "$extras" ] && [ "${have%% *}" = "$hash" ]; }; }; then
        return 0
    fi
    echo "== installing Python packages into $VENV (pip)"
    [ -x "$VENV_PY" ] || python3 -m venv "$VENV"
    # Output unfiltered: a failed install must show and stop the caller (set -e).
    PIP_ROOT_USER_ACTION=ignore "$VENV_PY" -m pip install -q --disable-pip-version-check -e "$spec"
    echo "$hash $extras" > "$VENV/.realmfs-installed"
}
