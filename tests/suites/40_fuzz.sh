# libFuzzer targets: every tests/fuzz/fuzz_<name>.cpp is compiled alone (it
# #includes the PostgreSQL-free source it fuzzes) with ASan and UBSan, and run
# for a bounded time. One test case per target: PASS iff it builds and the run
# ends without a crash, leak, timeout or sanitizer report.
#
# Optional per target: a seed corpus in tests/fuzz/corpus/<name>/ and a
# dictionary tests/fuzz/<name>.dict. FUZZ_SECONDS (default 12: millions of runs per target; CI's budget) bounds each run.
fuzz_seconds=${FUZZ_SECONDS:-12}
fuzz_cxx=${FUZZ_CXX:-clang++-14}
fuzz_build=tests/build/fuzz
fuzz_work=$TENANCY_TEST_WORK/fuzz
mkdir -p "$fuzz_build" "$fuzz_work"
for fuzz_src in tests/fuzz/fuzz_*.cpp; do
    [ -e "$fuzz_src" ] || continue
    fuzz_name=$(basename "$fuzz_src" .cpp)
    fuzz_short=${fuzz_name#fuzz_}
    fuzz_bin=$fuzz_build/$fuzz_name
    fuzz_log=$fuzz_work/$fuzz_name.log
    if ! "$fuzz_cxx" -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined \
        -fno-sanitize-recover=undefined -Iextension/src "$fuzz_src" -o "$fuzz_bin" \
        >"$fuzz_log" 2>&1; then
        tail -20 "$fuzz_log"
        record FAIL fuzz "$fuzz_short-build"
        continue
    fi
    # A fresh working corpus each run, seeded from the committed one.
    fuzz_corpus=$fuzz_work/corpus-$fuzz_short
    mkdir -p "$fuzz_corpus"
    fuzz_args=(-max_total_time="$fuzz_seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
               -artifact_prefix="$fuzz_work/$fuzz_short-")
    [ -f "tests/fuzz/$fuzz_short.dict" ] && fuzz_args+=(-dict="tests/fuzz/$fuzz_short.dict")
    fuzz_seeds=()
    [ -d "tests/fuzz/corpus/$fuzz_short" ] && fuzz_seeds+=("tests/fuzz/corpus/$fuzz_short")
    if UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        "$fuzz_bin" "${fuzz_args[@]}" "$fuzz_corpus" "${fuzz_seeds[@]}" >>"$fuzz_log" 2>&1; then
        echo "  $fuzz_name: $(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$fuzz_log" | grep -o '[0-9]*$') runs in ${fuzz_seconds}s"
        record PASS fuzz "$fuzz_short"
    else
        grep -E -A25 'ERROR: |runtime error|property violated|deadly signal' "$fuzz_log" | head -60
        ls "$fuzz_work"/"$fuzz_short"-* 2>/dev/null | sed 's/^/  crash input: /'
        record FAIL fuzz "$fuzz_short"
    fi
done
