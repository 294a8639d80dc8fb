"""Generate the chart's (and the Argo CD health check's) derived files, or check that they
are fresh.

    python hack/chart/generate.py           # write them
    python hack/chart/generate.py --check   # exit 1, naming each stale file

Derived files (never edit them by hand):
- values.schema.json  from the annotated values.yaml;
- README.md           from README.md.tmpl, values.yaml and the schema;
- files/crds/finetunejobs.yaml, a byte-for-byte copy of the generated crds/finetunejobs.yaml
  (a copy rather than a symlink: `helm package`, Argo CD and Flux all read a chart
  directory's regular files, and not every one of them follows links out of the chart);
- deploy/argocd/argocd-cm.yaml from deploy/argocd/health.lua.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import annotated_values
from argocd_cm import render_argocd_cm
from readme import render_readme
from schema import values_schema

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "finetune-operator"
CRD_SOURCE = REPO / "crds" / "finetunejobs.yaml"
CRD_COPY = CHART / "files" / "crds" / "finetunejobs.yaml"
ARGOCD = REPO / "deploy" / "argocd"


def expected_files() -> dict[Path, str]:
    """Each derived file and the text it must have."""
    settings = annotated_values.load(CHART / "values.yaml")
    schema_text = json.dumps(values_schema(settings), indent=2) + "\n"
    readme_text = render_readme((CHART / "README.md.tmpl").read_text(), settings)
    return {
        CHART / "values.schema.json": schema_text,
        CHART / "README.md": readme_text,
        CRD_COPY: CRD_SOURCE.read_text(),
        ARGOCD / "argocd-cm.yaml": render_argocd_cm((ARGOCD / "health.lua").read_text()),
    }


def stale_files(files: dict[Path, str]) -> list[Path]:
    return [path for path, text in files.items() if not path.exists() or path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; write nothing")
    args = parser.parse_args(argv)
    files = expected_files()
    stale = stale_files(files)
    if args.check:
        for path in stale:
            print(f"stale: {path.relative_to(REPO)}", file=sys.stderr)
        if stale:
            print("run `make chart-docs` (python hack/chart/generate.py)", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path])
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
