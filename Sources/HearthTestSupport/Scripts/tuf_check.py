#!/usr/bin/env python3
"""python-tuf (the reference TUF client library) checks metadata made by Hearth.

  tuf_check.py ROOT                     parse root.json, verify the root role's threshold over it, and
                                        print its canonical JSON (compared byte for byte by the test)
  tuf_check.py ROOT TS SNAP TARGETS NAME IMAGE
                                        run the client workflow (TrustedMetadataSet: timestamp, snapshot,
                                        targets, with python-tuf's own clock) and verify the image's
                                        length and hashes against its target entry; print its custom fields

Exit 0 verified, 1 refused (the reason printed)."""
import json
import sys

from tuf.api.metadata import Metadata, Root
from tuf.api.serialization.json import CanonicalJSONSerializer


def chain(root, timestamp, snapshot, targets, name, image):
    from tuf.ngclient._internal.trusted_metadata_set import TrustedMetadataSet
    from tuf.ngclient.config import EnvelopeType

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    trusted = TrustedMetadataSet(read(root), EnvelopeType.METADATA)
    trusted.update_timestamp(read(timestamp))
    trusted.update_snapshot(read(snapshot))
    trusted.update_targets(read(targets))
    info = trusted.targets.targets[name]
    info.verify_length_and_hashes(read(image))
    return {"verified": True, "custom": info.custom}


def main():
    if len(sys.argv) == 7:
        try:
            print(json.dumps(chain(*sys.argv[1:])))
            return 0
        except Exception as e:
            print(json.dumps({"verified": False, "error": f"{type(e).__name__}: {e}"}))
            return 1
    try:
        md = Metadata.from_file(sys.argv[1])
        md.signed.verify_delegate(Root.type, md.signed_bytes, md.signatures)
    except Exception as e:  # the test wants the refusal, whatever its class
        print(json.dumps({"verified": False, "error": f"{type(e).__name__}: {e}"}))
        return 1
    canonical = CanonicalJSONSerializer().serialize(md.signed).decode()
    print(json.dumps({"verified": True, "version": md.signed.version, "canonical": canonical}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
