#!/usr/bin/env bash
# The GPU session, prepared: two device calls that fit the 15 device minutes (starts included).
#   call 1  benchmarks/gpu_session.sh variants   timeout_s 320: every engine variant vs cuDNN (~4 min)
#   call 2  benchmarks/gpu_session.sh check      timeout_s 560: GPU tests, resources, target, PTB shapes
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
  variants) python3 -m lightning_rnn.bench.variants "$work/variants" --time-limit 240 ;;
  check) python3 -m lightning_rnn.bench.gpu_check "$work" \
           --only gpu-tests,resources,bench-target,bench-target-step,bench-ptb ;;
  sweep) python3 -m lightning_rnn.bench.gpu_check "$work" --only bench-sweep ;;
  *) echo "unknown call $call" >&2; exit 2 ;;
esac 2>&1 | tee "$out/$call.log"
rc=${PIPESTATUS[0]}
tar czf "$out/$call.tgz" -C "$work" .
exit "$rc"
