#!/bin/sh
# Install this bundle's wheels offline (only what the machine lacks: torch, timm and torchvision are the
# machine's own), then run the GPU suite. Arguments go to `python -m benchmarks.gpu_suite`; the JSON goes to
# results/ beside this script unless --json says otherwise.
#     sh run.sh                      # the whole suite on CUDA, at most six minutes
#     sh run.sh --json "$OUT/"       # write the JSON elsewhere
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
SITE="$HERE/site"
mkdir -p "$SITE" "$HERE/results"
"$PY" - "$HERE" "$SITE" <<'PYEOF'
import importlib.metadata as md, pathlib, subprocess, sys
here, site = pathlib.Path(sys.argv[1]), sys.argv[2]
def have(name):
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False
missing = [str(w) for w in sorted([*here.glob("wheels/*.whl"), *here.glob("wheels-large/*.whl")])
           if w.name.split("-")[0] == "rcmseg" or not have(w.name.split("-")[0].replace("_", "-"))]
if missing:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    "--target", site, "--upgrade", *missing], check=True)
print(f"installed {len(missing)} wheels into {site}")
PYEOF
cd "$HERE"
case " $* " in *" --json "*) set -- "$@" ;; *) set -- --json "$HERE/results/" "$@" ;; esac
PYTHONPATH="$SITE:$HERE${PYTHONPATH:+:$PYTHONPATH}" exec timeout 370 "$PY" -m benchmarks.gpu_suite \
    --device cuda --model "$SITE/models/zoo/phantom-b2" "$@"
