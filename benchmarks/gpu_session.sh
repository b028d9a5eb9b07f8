#!/usr/bin/env bash
# The GPU session, prepared: two device calls that fit the 15 device minutes (starts included).
#   call 1  benchmarks/gpu_session.sh variants   timeout_s 420: the barrier smoke test (timeout 60: a barrier
#           that hangs costs this step only), every engine variant vs cuDNN (~4 min), then the determinism
#           check (each variant 10 runs at T1024, one batch tile and several: bitwise equal; timeout 90)
#   call 2  benchmarks/gpu_session.sh check      timeout_s what is left (<= 440): GPU tests, resources, target, PTB
# Each leaves $OUT/<call>.log and $OUT/<call>.tgz (one archive: a call returns at most 8 files).
# Python packages the machine lacks travel as wheels in .whl/ (carry ".whl"; see the device README). The
# copy of the tree there has no .git: start the command with LIGHTNING_RNN_GIT_COMMIT=<commit> so results say it.
set -uo pipefail
cd "$(dirname "$0")/.."
call=${1:?usage: benchmarks/gpu_session.sh variants|check}
out=${OUT:?OUT is the device call output folder}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
work=$(mktemp -d)
nvidia-smi > "$work/nvidia-smi.txt" 2>&1
echo "${LIGHTNING_RNN_GIT_COMMIT:-unknown}" > "$work/commit.txt"
case $call in
  variants)
    timeout 60 python3 -m lightning_rnn.bench.smoke barrier "$work/smoke"; echo "barrier smoke: exit $?"
    timeout 290 python3 -m lightning_rnn.bench.variants "$work/variants" --time-limit 230; rc_v=$?
    # After the variants: their kernels (T256, same specialization as T1024) are in Triton's cache by now.
    timeout 90 python3 -m lightning_rnn.bench.smoke determinism "$work/smoke"; echo "determinism: exit $?"
    exit $rc_v ;;
  check) python3 -m lightning_rnn.bench.gpu_check "$work" \
           --only gpu-tests,resources,bench-target,bench-target-step,bench-ptb ;;
  sweep) python3 -m lightning_rnn.bench.gpu_check "$work" --only bench-sweep ;;
  *) echo "unknown call $call" >&2; exit 2 ;;
esac 2>&1 | tee "$out/$call.log"
rc=${PIPESTATUS[0]}
tar czf "$out/$call.tgz" -C "$work" .
exit "$rc"
