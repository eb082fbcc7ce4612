#!/bin/sh
# Make sure bubblewrap (bwrap) is installed: the challenge grader runs student code in it, and its tests
# (tests/test_grader.py) must run, not skip, in CI. Installs the Debian/Ubuntu package when this is root and
# apt-get exists; otherwise says what to do and leaves the decision to the tests (they skip, with the reason,
# only when bwrap is absent and this is not root). Never fails the build by itself.
if command -v bwrap >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing bubblewrap (the grader's sandbox) ..."
    if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap) >/dev/null 2>&1; then
        echo "bubblewrap $(bwrap --version 2>/dev/null | cut -d' ' -f2) installed"
        exit 0
    fi
    echo "warning: apt-get could not install bubblewrap; sandbox tests will fail as root" >&2
    exit 0
fi
echo "note: bwrap not installed and not root: install bubblewrap (apt-get install bubblewrap) to run the" \
     "grader's sandbox tests and to grade untrusted scripts" >&2
exit 0
