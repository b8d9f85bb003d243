#!/usr/bin/env bash
# Puts the official CSAF 2.0 and OSV JSON schemas where the advisory tests look for them
# (${XDG_CACHE_HOME:-~/.cache}/hearth/schemas), taken from the PyPI packages that carry them:
#   csaf.json  OASIS CSAF 2.0 (https://docs.oasis-open.org/csaf/csaf/v2.0/csaf_json_schema.json), in the
#              sdist of cvrf2csaf 1.0.0, the OASIS CSAF TC's converter
#   osv.json   ossf/osv-schema validation/schema.json, in the osv 0.0.22 wheel
# Idempotent; needs pip and PyPI.
set -euo pipefail
dir="${XDG_CACHE_HOME:-$HOME/.cache}/hearth/schemas"
[ -s "$dir/csaf.json" ] && [ -s "$dir/osv.json" ] && grep -q 'docs.oasis-open.org/csaf/csaf/v2.0' "$dir/csaf.json" && exit 0
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --no-binary :all: "cvrf2csaf==1.0.0" -d "$tmp" 2>/dev/null
python3 -m pip download -q --no-deps "osv==0.0.22" -d "$tmp" 2>/dev/null
python3 - "$tmp" "$dir" <<'PY'
import glob, os, sys, tarfile, zipfile
tmp, out = sys.argv[1], sys.argv[2]
with tarfile.open(glob.glob(os.path.join(tmp, "cvrf2csaf-*.tar.gz"))[0]) as t:
    member = next(m for m in t.getmembers() if m.name.endswith("cvrf2csaf/schemata/csaf/2.0/csaf_json_schema.json"))
    open(os.path.join(out, "csaf.json"), "wb").write(t.extractfile(member).read())
with zipfile.ZipFile(glob.glob(os.path.join(tmp, "osv-*.whl"))[0]) as z:
    open(os.path.join(out, "osv.json"), "wb").write(z.read("osv/osv-schema/validation/schema.json"))
PY
echo "schemas: $dir"
