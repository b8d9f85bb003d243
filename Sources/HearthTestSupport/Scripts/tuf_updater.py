#!/usr/bin/env python3
"""python-tuf's standard client (ngclient.Updater) against Hearth's update repository.

  tuf_updater.py BASE_URL ROOT_JSON WORKDIR TARGET

Trusts ROOT_JSON (version 1), refreshes root → timestamp → snapshot → targets from
BASE_URL/tuf/metadata/, downloads TARGET from BASE_URL/tuf/targets/ (consistent snapshots) and
verifies its length and hashes. The server's TLS anchor comes from SSL_CERT_FILE.
Prints one JSON line: the trusted versions and the target's length, sha256 and custom fields.
Exit 0 verified, 1 refused (the reason printed)."""
import json
import os
import shutil
import sys
import time

from tuf.ngclient import Updater


def main():
    base, root, work, name = sys.argv[1:5]
    metadata_dir = os.path.join(work, "metadata")
    target_dir = os.path.join(work, "targets")
    os.makedirs(metadata_dir, exist_ok=True)
    os.makedirs(target_dir, exist_ok=True)
    shutil.copy(root, os.path.join(metadata_dir, "root.json"))
    updater = Updater(metadata_dir, base + "/tuf/metadata/", target_dir, base + "/tuf/targets/")
    try:
        started = time.perf_counter()
        updater.refresh()
        refresh_ms = (time.perf_counter() - started) * 1000
        info = updater.get_targetinfo(name)
        if info is None:
            print(f"no target {name}")
            return 1
        path = updater.download_target(info)
    except Exception as e:  # every refusal of python-tuf is an exception
        print(f"refused: {type(e).__name__}: {e}")
        return 1
    trusted = updater._trusted_set
    print(json.dumps({
        "root": trusted.root.version, "timestamp": trusted.timestamp.version,
        "snapshot": trusted.snapshot.version, "targets": trusted.targets.version,
        "length": info.length, "sha256": info.hashes["sha256"], "custom": info.custom,
        "downloaded": os.path.getsize(path), "refreshMs": round(refresh_ms, 1),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
