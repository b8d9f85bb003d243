#!/usr/bin/env python3
"""python-tuf (the reference TUF client library) checks a root.json made by Hearth: it parses it,
verifies the root role's signature threshold over it, and prints its canonical JSON encoding so the
test can compare it byte for byte with Hearth's. Exit 0 verified, 1 refused."""
import json
import sys

from tuf.api.metadata import Metadata, Root
from tuf.api.serialization.json import CanonicalJSONSerializer


def main():
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
