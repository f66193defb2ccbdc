"""Checks that every checkov finding accepted in the IaC (CDK resource
Metadata, `#checkov:skip` comments in terraform/gcp, arm-templates/.checkov.yaml)
is listed in docs/deploy.md's "Accepted policy findings" table, and that the
table lists nothing else. Usage: check_accepted_findings.py CFN_TEMPLATE...
"""

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def in_code(templates):
    found = set()
    for t in templates:
        for res in json.loads(Path(t).read_text())["Resources"].values():
            for skip in res.get("Metadata", {}).get("checkov", {}).get("skip", []):
                assert skip.get("comment"), f"{t}: {skip['id']} has no reason"
                found.add(("AWS", skip["id"]))
    for tf in (ROOT / "terraform/gcp").glob("*.tf"):
        for cid, reason in re.findall(r"#checkov:skip=(CKV2?_\w+):(.*)", tf.read_text()):
            assert reason.strip(), f"{tf}: {cid} has no reason"
            found.add(("GCP", cid))
    arm = yaml.safe_load((ROOT / "arm-templates/.checkov.yaml").read_text())
    found |= {("Azure", cid) for cid in arm["skip-check"]}
    return found


def in_docs():
    text = (ROOT / "docs/deploy.md").read_text()
    section = re.search(r"^## Accepted policy findings\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, "docs/deploy.md has no '## Accepted policy findings' section"
    rows = re.findall(r"^\|\s*(AWS|GCP|Azure)\s*\|\s*`?(CKV2?_\w+)`?\s*\|[^|]*\|\s*([^|]+?)\s*\|$", section.group(1), re.M)
    for cloud, cid, reason in rows:
        assert len(reason) > 20, f"docs/deploy.md: {cloud} {cid} has no real reason"
    return {(cloud, cid) for cloud, cid, _ in rows}


def main():
    code, docs = in_code(sys.argv[1:]), in_docs()
    missing, stale = sorted(code - docs), sorted(docs - code)
    if missing or stale:
        for cloud, cid in missing:
            print(f"accepted in code but not listed in docs/deploy.md: {cloud} {cid}", file=sys.stderr)
        for cloud, cid in stale:
            print(f"listed in docs/deploy.md but not accepted in code: {cloud} {cid}", file=sys.stderr)
        sys.exit(1)
    print(f"{len(code)} accepted findings, all listed with reasons in docs/deploy.md")


if __name__ == "__main__":
    main()
