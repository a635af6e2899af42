#!/usr/bin/env bash
# Builds the Debian package with `cargo deb` ([package.metadata.deb] in Cargo.toml) and
# checks it: the paths it installs (dpkg-deb -c), the control fields, the packaged
# binary run from a scratch root (dpkg-deb -x), the man page and completions as in the
# tree, and lintian's verdict when lintian is installed (errors fail, the rest is
# printed). Called by tools/test.sh, which installs cargo-deb.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "tools/deb.sh: $*" >&2; exit 1; }
command -v cargo-deb >/dev/null || fail "cargo-deb is missing: cargo install cargo-deb --locked"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
head -n 1 debian/changelog | grep -qF "wsbridge ($version-1)" \
  || fail "debian/changelog does not start with an entry for $version-1; add one"

deb=$(cargo deb --quiet | tail -n 1)
[ -f "$deb" ] || fail "cargo deb did not report a package file (got: $deb)"
echo "tools/deb.sh: built $deb"

[ "$(dpkg-deb -f "$deb" Package)" = wsbridge ] || fail "Package is not wsbridge"
[ "$(dpkg-deb -f "$deb" Version)" = "$version-1" ] || fail "Version is not $version-1"
dpkg-deb -f "$deb" Depends | grep -q 'libc6' || fail "Depends does not name libc6"

listing=$(dpkg-deb -c "$deb" | awk '{print $6}')
for path in \
  ./usr/bin/wsbridge \
  ./usr/share/man/man1/wsbridge.1.gz \
  ./usr/share/bash-completion/completions/wsbridge \
  ./usr/share/zsh/vendor-completions/_wsbridge \
  ./usr/share/fish/vendor_completions.d/wsbridge.fish \
  ./usr/share/doc/wsbridge/copyright \
  ./usr/share/doc/wsbridge/changelog.Debian.gz \
  ./usr/share/doc/wsbridge/README.md \
  ./usr/share/doc/wsbridge/examples/count.sh \
  ./usr/share/doc/wsbridge/examples/www/index.html \
  ./usr/share/doc/wsbridge/examples/systemd/wsbridge.service \
  ./usr/share/doc/wsbridge/examples/systemd/wsbridge.socket; do
  grep -qxF "$path" <<<"$listing" || fail "$path is not in the package; it has:
$listing"
done

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
got=$("$root/usr/bin/wsbridge" --version)
[ "$got" = "wsbridge $version" ] || fail "the packaged binary says '$got', not 'wsbridge $version'"
cmp -s <(gzip -dc "$root/usr/share/man/man1/wsbridge.1.gz") man/wsbridge.1 \
  || fail "the packaged man page differs from man/wsbridge.1"
cmp -s "$root/usr/share/bash-completion/completions/wsbridge" completions/wsbridge.bash \
  || fail "the packaged bash completion differs from completions/wsbridge.bash"
# The packaged completion works: bash offers --maxforks for `wsbridge --maxf`.
offered=$(bash --norc --noprofile -c "source '$root/usr/share/bash-completion/completions/wsbridge'
  COMP_WORDS=(wsbridge --maxf); COMP_CWORD=1; COMP_LINE='wsbridge --maxf'; COMP_POINT=\${#COMP_LINE}
  _wsbridge wsbridge --maxf wsbridge; printf '%s\n' \"\${COMPREPLY[@]}\"")
grep -qx -- --maxforks <<<"$offered" || fail "the packaged bash completion does not offer --maxforks: $offered"

if command -v lintian >/dev/null; then
  # Errors fail the build; warnings and notes are printed for a human to weigh.
  status=0
  lintian --fail-on error --tag-display-limit 0 "$deb" || status=$?
  [ "$status" -eq 0 ] || fail "lintian found errors in $deb"
else
  echo "tools/deb.sh: lintian is not installed; skipped"
fi
echo "tools/deb.sh: $deb OK ($(stat -c %s "$deb") bytes)"
