#!/bin/sh
# Entry point of the worker image: give this container a GPU of its own, then run the command
# (`rcmseg worker`, the image's CMD).
#
# `docker compose up --scale worker=N` starts N identical containers. Compose cannot hand each replica a
# different device id, and Docker turns a reservation of `count: 1` into GPU 0 for every one of them. So
# docker-compose.yml shows every worker all the GPUs of its host, and each worker claims the first free one
# here: an exclusive lock on <WORKER_GPU_LOCK_DIR>/<GPU uuid>.lock, a folder that all the workers of one
# host share (a named volume). The lock is held on a file descriptor that `exec` hands to the worker
# process, so it lasts exactly as long as the worker: a worker that exits or dies frees its GPU, and a
# restarted worker claims one again. When every GPU is taken, the worker waits until one is freed.
#
# Nothing is claimed when CUDA_VISIBLE_DEVICES is set (a worker pinned to a GPU by hand), when
# RCMSEG_DEVICE=cpu, or when nvidia-smi is missing (the container was given no GPU).
#
#   WORKER_GPUS          comma-separated GPU indexes (as nvidia-smi numbers them) or UUIDs that workers of
#                        this host may claim; default: every GPU the container sees
#   WORKER_GPU_LOCK_DIR  the shared lock folder (the image sets it)
#   WORKER_GPU_WAIT_S    seconds between attempts while every GPU is taken (default 10)
set -eu

log() {
    echo "rcmseg-worker-entrypoint: $*" >&2
}

# One "index,uuid" line per GPU this worker may claim.
gpu_list() {
    nvidia-smi --query-gpu=index,uuid --format=csv,noheader 2>/dev/null | tr -d ' ' |
        while IFS=, read -r index uuid; do
            if [ -z "${WORKER_GPUS:-}" ]; then
                echo "$index,$uuid"
                continue
            fi
            for wanted in $(echo "$WORKER_GPUS" | tr ',' ' '); do
                if [ "$wanted" = "$index" ] || [ "$wanted" = "$uuid" ]; then
                    echo "$index,$uuid"
                fi
            done
        done
}

# Lock the first free GPU of the list on file descriptor 9 and select it for CUDA; fails when none is free.
claim_gpu() {
    for gpu in $1; do
        index=${gpu%%,*}
        uuid=${gpu#*,}
        exec 9>>"$lock_dir/$uuid.lock"
        if flock --nonblock 9; then
            export CUDA_VISIBLE_DEVICES="$uuid"
            log "using GPU $index ($uuid)"
            return 0
        fi
        exec 9>&-
    done
    return 1
}

if [ -z "${CUDA_VISIBLE_DEVICES+set}" ] && [ "${RCMSEG_DEVICE:-auto}" != "cpu" ] &&
    command -v nvidia-smi >/dev/null 2>&1; then
    lock_dir=${WORKER_GPU_LOCK_DIR:-/var/lib/rcmseg/gpu-locks}
    mkdir -p "$lock_dir"
    gpus=$(gpu_list)
    if [ -z "$gpus" ] && [ -n "${WORKER_GPUS:-}" ]; then
        log "WORKER_GPUS=$WORKER_GPUS names no GPU of this container (see nvidia-smi -L)"
        exit 2
    elif [ -z "$gpus" ]; then
        log "nvidia-smi lists no GPU; starting without claiming one"
    else
        trap 'exit 143' TERM INT
        waiting=0
        until claim_gpu "$gpus"; do
            if [ "$waiting" = 0 ]; then
                log "all $(echo "$gpus" | wc -l) GPUs already have a worker; waiting for one to be freed"
                waiting=1
            fi
            sleep "${WORKER_GPU_WAIT_S:-10}"
        done
        trap - TERM INT
    fi
fi
exec "$@"
