#!/usr/bin/env bash
# Builds havip's Debian package: target/debian/havip_<version>-1_<arch>.deb.
#
#   scripts/build-deb.sh            # release build (what you ship)
#   PROFILE=dev scripts/build-deb.sh  # debug build (CI and the rig: no second compile)
#
# The man pages and shell completions come from the CLI's own definition (`havip
# manpages`, `havip completions`), so they cannot drift from `--help`. Needs cargo-deb
# (`cargo install cargo-deb`); installs it when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${PROFILE:-release}
case $profile in
  release) dir=release ;;
  dev) dir=debug ;;
  *) dir=$profile ;;
esac
target=$(realpath -m "${CARGO_TARGET_DIR:-target}")

if ! cargo deb --version >/dev/null 2>&1; then
  echo "build-deb: installing cargo-deb (once)" >&2
  cargo install --locked cargo-deb --version 3.8.0
fi

echo "build-deb: building havip ($profile)" >&2
cargo build --profile "$profile" --bin havip
bin="$target/$dir/havip"

# Cargo.toml names them under ./target whatever CARGO_TARGET_DIR is.
assets=target/deb-assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
"$bin" manpages --out "$assets/man"
"$bin" completions bash >"$assets/completions/havip.bash"
"$bin" completions zsh >"$assets/completions/_havip"
"$bin" completions fish >"$assets/completions/havip.fish"
gzip -9n "$assets"/man/*.8

# cargo-deb maps target/release/ in the asset list to the profile's directory.
out=$(cargo deb --no-build --profile "$profile" --output "$target/debian/" | tail -n 1)
echo "build-deb: $out" >&2
dpkg-deb --info "$out" | sed -n '/Package:/,/Description:/p' >&2
echo "$out"
