#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (cargo fuzz, libFuzzer) for FUZZ_SECONDS each, one after
# another with one worker, and fails if any found a crash: a panic, an out-of-memory (one
# allocation over FUZZ_MALLOC_MB, or a process over 1 GiB), a hang (an input over 10 s) or
# an ASan report. The input that did it is left in fuzz/artifacts/<target>/; replay it
# with `cargo +nightly fuzz run <target> artifacts/<target>/<file>` in fuzz/.
# Installs the nightly toolchain and cargo-fuzz when missing.
#
#   scripts/fuzz.sh [TARGET...]      all targets (`cargo fuzz list`) when none is named
#
# FUZZ_SECONDS     per target (default 20)
# FUZZ_TARGET_DIR  cargo's target dir for the fuzz build (default target/fuzz)
# FUZZ_CORPUS      the working corpus, one dir per target, grown by the runs and never
#                  committed (default $FUZZ_TARGET_DIR/corpus); the committed seeds in
#                  fuzz/seeds/<target>/ are read alongside it
# FUZZ_SANITIZER   address (default) or none (CI: a shorter build; havip is safe Rust, so
#                  what the fuzzer finds there is panics, OOMs and hangs either way)
# FUZZ_DEV=1       an unoptimised build (CI: builds several times faster, runs slower;
#                  overflow checks are on in both)
# FUZZ_BUILD=0     run the binaries already built, without `cargo fuzz build`
# FUZZ_MALLOC_MB   largest single allocation allowed (default 128: a frame payload is at
#                  most 16 MiB, so anything near this is a length prefix believed)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-20}
target_dir=$(realpath -m "${FUZZ_TARGET_DIR:-target/fuzz}")
corpus_root=$(realpath -m "${FUZZ_CORPUS:-$target_dir/corpus}")
sanitizer=${FUZZ_SANITIZER:-address}
malloc_mb=${FUZZ_MALLOC_MB:-128}

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

cd fuzz
fuzz=(cargo +nightly fuzz)
build_opts=(--sanitizer "$sanitizer" --target-dir "$target_dir")
profile=release
if [ "${FUZZ_DEV:-0}" != 0 ]; then
  build_opts+=(--dev)
  profile=debug
fi
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <("${fuzz[@]}" list)
fi
if [ "${FUZZ_BUILD:-1}" != 0 ]; then
  "${fuzz[@]}" build "${build_opts[@]}"
fi
bin_dir=$target_dir/$(rustc -vV | sed -n 's/^host: //p')/$profile

# The JSON and TOML targets start from a dictionary of the protocol's names.
dict_for() {
  case $1 in
    config | duration) echo dict/config.dict ;;
    peer_request | raft_rpc | raft_state | control_request) echo dict/json.dict ;;
    *) ;;
  esac
}

failed=()
for t in "${targets[@]}"; do
  mkdir -p "$corpus_root/$t"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024
    -malloc_limit_mb="$malloc_mb" -max_len=8192 -print_final_stats=1)
  dict=$(dict_for "$t")
  if [ -n "$dict" ]; then
    args+=(-dict="$dict")
  fi
  mkdir -p "artifacts/$t"
  args+=(-artifact_prefix="artifacts/$t/")
  echo "== fuzz $t: ${seconds}s"
  # The binary itself, not `cargo fuzz run`, which runs cargo again per target.
  if ! "$bin_dir/$t" "${args[@]}" "$corpus_root/$t" "seeds/$t"; then
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]}; inputs in fuzz/artifacts/" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"
