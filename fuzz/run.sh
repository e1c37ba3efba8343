#!/bin/sh
# Runs one fuzz target from its seeds until SECONDS pass or RUNS executions are done,
# whichever comes first:   fuzz/run.sh TARGET [SECONDS] [RUNS]   (defaults: 600, 10000000)
# The corpus grows in fuzz/corpus/TARGET and crashes land in fuzz/artifacts/TARGET (both
# ignored by git). One libFuzzer process, so two-core machines stay usable.
set -eu
cd "$(dirname "$0")"
target=$1
secs=${2:-600}
runs=${3:-10000000}
mkdir -p "corpus/$target"
if [ -d "seeds/$target" ]; then
    cp seeds/"$target"/* "corpus/$target/"
fi
if [ "$target" = firmware_replies ]; then
    # Replies captured from real machines (the adapters' own fixtures) are its realistic seeds.
    for f in ../tools/fixtures/firmware/*/*; do
        case "$f" in */sources.toml) ;; *) cp "$f" "corpus/$target/$(basename "$(dirname "$f")")-$(basename "$f")" ;; esac
    done
fi
if [ "$target" = config_toml ]; then
    # The shipped configurations are the realistic seeds of the loader.
    cp ../config.example.toml "corpus/$target/config.example.toml"
    cp ../docker/hashshift.toml "corpus/$target/docker-hashshift.toml"
fi
exec cargo +nightly fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$secs" -runs="$runs" -print_final_stats=1
