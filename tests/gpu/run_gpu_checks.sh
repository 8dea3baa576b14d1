#!/usr/bin/env bash
# The CUDA checks, for a machine with an NVIDIA GPU. Run from the repository root:
#
#     tests/gpu/run_gpu_checks.sh [--data DIR]
#
# 1. configure and build with -DTTFS_CUDA=ON into build-gpu/ (default architectures);
# 2. make sure python has numpy and pytest (pip install when missing);
# 3. the library loads and sees a device;
# 4. tests/test_cuda.py against build-gpu/libttfs.so, with TTFS_REQUIRE_CUDA=1 so that a missing
#    device fails instead of skipping: CPU == CUDA bit for bit on random networks, both engines;
# 5. tests/gpu/bench_gpu.py: images/second, CPU analytic vs CUDA analytic and stepped.
# 6. tests/gpu/check_models.py: the committed MNIST and Fashion-MNIST models, CPU == CUDA bit for
#    bit on their test images (the full test sets when --data DIR holds them as IDX files, see
#    that script; else the 100 committed beside each model), accuracy and images/second.
#
# Prints a PASS or FAIL line per step and a summary; exits non-zero if any step failed. When
# $OUT is set, the logs, the pytest report and bench_gpu.json are written there. Takes about
# 3-5 minutes, most of it the CUDA build.
set -u -o pipefail

cd "$(dirname "$0")/../.." || exit 2
ROOT=$(pwd)
BUILD="$ROOT/build-gpu"
LIB="$BUILD/libttfs.so"
PYTHON=${PYTHON:-python3}
LOGS=${OUT:-$ROOT/build-gpu/logs}
DATA=()
while [ $# -gt 0 ]; do
    case $1 in
        --data) [ $# -ge 2 ] || { echo "--data needs a folder"; exit 2; }
                DATA=(--data "$2"); shift 2 ;;
        *) echo "unknown argument: $1 (usage: $0 [--data DIR])"; exit 2 ;;
    esac
done
mkdir -p "$LOGS"

failed=()
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1"; failed+=("$1"); }
# run_step NAME LOGFILE COMMAND...: runs a step, shows the tail of its log when it fails.
run_step() {
    local name=$1 log=$2
    shift 2
    local start=$SECONDS
    if "$@" >"$log" 2>&1; then
        pass "$name ($((SECONDS - start)) s)"
        return 0
    fi
    tail -n 40 "$log"
    fail "$name ($((SECONDS - start)) s, log: $log)"
    return 1
}

echo "== ttfs GPU checks in $ROOT"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
else
    echo "(nvidia-smi not found)"
fi

echo "== 1. build (TTFS_CUDA=ON) into $BUILD"
if ! run_step "configure" "$LOGS/configure.log" cmake -S "$ROOT" -B "$BUILD" -DTTFS_CUDA=ON \
        -DCMAKE_BUILD_TYPE=Release \
   || ! run_step "build" "$LOGS/build.log" cmake --build "$BUILD" -j16; then
    echo "SUMMARY: FAIL"
    exit 1
fi

echo "== 2. python packages"
if "$PYTHON" -c "import numpy, pytest" >/dev/null 2>&1; then
    pass "numpy and pytest present"
else
    run_step "pip install numpy pytest" "$LOGS/pip.log" "$PYTHON" -m pip install --quiet numpy pytest
fi

echo "== 3. library and device"
export TTFS_LIBRARY="$LIB"
if "$PYTHON" -c "
import sys, pyttfs
print(pyttfs.build_info())
sys.exit(0 if pyttfs.cuda_compiled() and pyttfs.cuda_device_count() > 0 else 1)
"; then
    pass "libttfs loads, CUDA compiled in, device found"
else
    fail "libttfs loads, CUDA compiled in, device found"
fi

echo "== 4. tests/test_cuda.py (CPU vs CUDA parity)"
run_step "tests/test_cuda.py" "$LOGS/test_cuda.log" env TTFS_REQUIRE_CUDA=1 \
    "$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py --junitxml="$LOGS/test_cuda.xml"
tail -n 1 "$LOGS/test_cuda.log"

echo "== 5. tests/gpu/bench_gpu.py (writes \$OUT/bench_gpu.json when OUT is set)"
start=$SECONDS
"$PYTHON" tests/gpu/bench_gpu.py 2>&1 | tee "$LOGS/bench_gpu.log"
if [ "${PIPESTATUS[0]}" -eq 0 ]; then
    pass "bench_gpu ($((SECONDS - start)) s)"
else
    fail "bench_gpu ($((SECONDS - start)) s, log: $LOGS/bench_gpu.log)"
fi

echo "== 6. tests/gpu/check_models.py (the committed models on their test images)"
start=$SECONDS
"$PYTHON" tests/gpu/check_models.py "${DATA[@]}" 2>&1 | tee "$LOGS/check_models.log"
if [ "${PIPESTATUS[0]}" -eq 0 ]; then
    pass "check_models ($((SECONDS - start)) s)"
else
    fail "check_models ($((SECONDS - start)) s, log: $LOGS/check_models.log)"
fi

if [ ${#failed[@]} -eq 0 ]; then
    echo "SUMMARY: PASS (all GPU checks)"
    exit 0
fi
echo "SUMMARY: FAIL (${#failed[@]} step(s)):"
printf '  %s\n' "${failed[@]}"
exit 1
