"""Prints the contacts held by the HubSpot emulator (used by scripts/demo).

usage: show-hubspot.py STATE_URL [EXPECTED_LIVE]; with EXPECTED_LIVE, waits (up to 10 s) until
that many live contacts are there.
"""
import json
import sys
import time
import urllib.request


def contacts(url):
    with urllib.request.urlopen(url) as r:
        return json.load(r)["objects"]["contacts"]


def main() -> int:
    url = sys.argv[1]
    expected = int(sys.argv[2]) if len(sys.argv) > 2 else None
    deadline = time.time() + 10
    while True:
        objs = contacts(url)
        live = sum(not o["archived"] for o in objs)
        if expected is None or live == expected or time.time() > deadline:
            break
        time.sleep(0.2)
    for o in sorted(objs, key=lambda o: int(o["id"])):
        p = o["properties"]
        state = "archived" if o["archived"] else "live"
        print(f"  hs_object_id={o['id']:<5} {state:8} pg_external_id={p.get('pg_external_id')} "
              f"email={p.get('email')} name={p.get('firstname')} {p.get('lastname')} "
              f"lifecyclestage={p.get('lifecyclestage')}")
    print(f"  {live} live, {len(objs) - live} archived")
    return 0


if __name__ == "__main__":
    sys.exit(main())
