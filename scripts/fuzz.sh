#!/usr/bin/env bash
# Run Berth's cargo-fuzz targets (fuzz/) for a while each.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]    # default: 60 seconds, every target
#   scripts/fuzz.sh 300 manifest_parse       # one target for five minutes
#   FUZZ_CMIN=1 scripts/fuzz.sh 600          # afterwards, re-choose fuzz/corpus/<target>
#
# cargo-fuzz needs nightly-only flags (-Zsanitizer); this machine has only stable Rust, so the
# runs set RUSTC_BOOTSTRAP=1, which lets stable rustc accept them. cargo-fuzz is installed from
# crates.io if it is missing.
#
# The committed corpus under fuzz/corpus/<target>/ is only read: new inputs go to a scratch
# corpus under fuzz/target/corpus/<target>/. With FUZZ_CMIN=1, fuzz/select_corpus.py then picks
# a few dozen inputs from both that cover every edge of berth-oci's hand-written code the two
# cover (cargo fuzz cmin keeps hundreds: most of them exercise serde_json) and writes them to
# fuzz/corpus/<target>/ (needs python3 and binutils).
#
# Exit status: 0 when no target found a failure; 1 when one did (the input is saved under
# fuzz/artifacts/<target>/ and reproduced with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz <target> <artifact>`).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
seconds=${1:-60}
[[ $# -gt 0 ]] && shift
case $seconds in '' | *[!0-9]*)
    echo "usage: $0 [SECONDS] [TARGET...]" >&2
    exit 2
    ;;
esac

export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

echo "== building ${targets[*]}"
for t in "${targets[@]}"; do
    cargo fuzz build --fuzz-dir fuzz "$t"
done

failed=()
for t in "${targets[@]}"; do
    committed=$root/fuzz/corpus/$t
    scratch=$root/fuzz/target/corpus/$t
    mkdir -p "$committed" "$scratch"
    args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
    [[ -f $root/fuzz/dicts/$t.dict ]] && args+=(-dict="$root/fuzz/dicts/$t.dict")
    echo "== fuzzing $t for ${seconds}s"
    if ! cargo fuzz run --fuzz-dir fuzz "$t" "$scratch" "$committed" -- "${args[@]}"; then
        failed+=("$t")
        continue
    fi
    if [[ ${FUZZ_CMIN:-0} == 1 ]]; then
        echo "== choosing the committed corpus of $t"
        host=$(rustc -vV | sed -n 's/^host: //p')
        python3 fuzz/select_corpus.py "fuzz/target/$host/release/$t" "$committed" 60 40 \
            "$committed" "$scratch"
        echo "   $(find "$committed" -type f | wc -l) files, $(du -sb "$committed" | cut -f1) bytes"
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "FAILED: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "== no failures in ${targets[*]}"
