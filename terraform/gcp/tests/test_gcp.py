"""Offline proofs of terraform/gcp: HCL parsing (python-hcl2), the variables'
validation rules against good and bad values, the resources' shape, no
plaintext secret, and the charts rendered with the module's values.

This is not `terraform validate`: no provider schema is available offline
(docs/deploy.md says exactly what is and is not proven). Run through
hack/iac-test.sh, which installs python-hcl2 and pytest and points
CARBON_KUBE_IAC_HELM at a helm binary.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import hcl2
import pytest

MODULE = Path(__file__).resolve().parents[1]
REPO = MODULE.parents[1]


def unquote(v):
    """python-hcl2 8 keeps the quotes of strings and keys; strip them recursively."""
    if isinstance(v, str):
        return v[1:-1] if len(v) >= 2 and v[0] == '"' and v[-1] == '"' else v
    if isinstance(v, list):
        return [unquote(x) for x in v]
    if isinstance(v, dict):
        return {unquote(k): unquote(x) for k, x in v.items() if k not in ("__comments__",)}
    return v


@pytest.fixture(scope="module")
def tf():
    """Every .tf file of the module, parsed and merged by block type."""
    merged = {}
    files = sorted(MODULE.glob("*.tf"))
    assert {f.name for f in files} >= {"main.tf", "variables.tf", "outputs.tf", "versions.tf"}
    for f in files:
        with f.open() as fh:
            doc = hcl2.load(fh)
        for kind, blocks in doc.items():
            if kind.startswith("__"):
                continue
            merged.setdefault(kind, []).extend(unquote(blocks))
    return merged


def variables(tf):
    return {name: body for block in tf["variable"] for name, body in block.items()}


def resources(tf, rtype):
    return {name: body for block in tf["resource"] for t, named in block.items() if t == rtype for name, body in named.items()}


def regexes(var):
    """The regex literals of a variable's validation conditions."""
    out = []
    for v in var.get("validation", []):
        out += [m.encode().decode("unicode_escape") for m in re.findall(r'regex\("((?:[^"\\]|\\.)*)"', v["condition"])]
    return out


def test_every_variable_and_output_is_documented_and_typed(tf):
    for name, var in variables(tf).items():
        assert var.get("description"), f"variable {name} has no description"
        assert var.get("type"), f"variable {name} has no type"
    outputs = {n: b for block in tf["output"] for n, b in block.items()}
    assert {"cluster_name", "region", "grid_zone", "provider_keys_secret", "kubeconfig_command"} <= outputs.keys()
    for name, out in outputs.items():
        assert out.get("description"), f"output {name} has no description"


def test_providers_are_pinned(tf):
    req = tf["terraform"][0]["required_providers"][0]
    assert req["google"]["source"] == "hashicorp/google" and req["google"]["version"].startswith("~>")
    assert req["helm"]["source"] == "hashicorp/helm" and req["helm"]["version"] == "~> 3.0"
    # Helm provider 3 takes `kubernetes = {...}` as an attribute, no longer a block.
    helm = next(p["helm"] for p in tf["provider"] if "helm" in p)
    assert "__is_block__" not in helm["kubernetes"]


def test_only_the_project_and_the_api_allow_list_are_required(tf):
    required = sorted(n for n, v in variables(tf).items() if "default" not in v)
    assert required == ["master_authorized_cidrs", "project_id"]


@pytest.mark.parametrize(
    "name, good, bad",
    [
        ("project_id", ["my-project-123", "carbon-kube-prod"], ["My_Project", "ab", "1project", "project-"]),
        ("region", ["europe-north1", "us-central1", "northamerica-northeast2"], ["europe-north1-a", "EU", ""]),
        ("grid_zone", ["FI", "DE", "US-MIDW-MISO", "SE-SE3"], ["fi", "Finland", "US_CAL"]),
        ("cluster_name", ["carbon-kube", "ck1"], ["Carbon", "-x", "x" * 41]),
        ("provider_keys_secret_id", ["carbon-kube-provider-keys"], ["has space", "a/b", ""]),
    ],
)
def test_variable_regexes_accept_good_and_reject_bad_values(tf, name, good, bad):
    var = variables(tf)[name]
    (pattern,) = regexes(var)
    for v in good:
        assert re.search(pattern, v), f"{name}: {v!r} should pass {pattern}"
    for v in bad:
        assert not re.search(pattern, v), f"{name}: {v!r} should fail {pattern}"
    if "default" in var:
        assert re.search(pattern, var["default"]), f"{name}: the default fails its own validation"


def test_list_and_enum_validations_name_their_rules(tf):
    v = variables(tf)
    cidrs = v["master_authorized_cidrs"]["validation"][0]["condition"]
    assert "0.0.0.0/0" in cidrs and "cidrhost" in cidrs and "length(var.master_authorized_cidrs) > 0" in cidrs
    assert 'contains(["RAPID", "REGULAR", "STABLE"], var.release_channel)' in v["release_channel"]["validation"][0]["condition"]
    nodes = v["nodes_per_zone"]["validation"][0]["condition"]
    assert ">= 1" in nodes and "<= 100" in nodes and "floor" in nodes
    chart = v["chart_values"]["validation"][0]["condition"]
    for path in ["electricityMaps.apiKey", "noaa.apiKey", "watttime.username", "watttime.password", "existingSecret"]:
        assert f"!can(var.chart_values.{path})" in chart, f"chart_values does not reject {path}"


def test_default_region_grid_zone_matches_the_extenders_table(tf):
    src = (REPO / "crates/carbon-kube-policy/src/zone_map/builtin.rs").read_text()
    table = re.search(r"pub const GCP: &\[\(&str, &str\)\] = &\[(.*?)\];", src, re.S)
    assert table, "builtin.rs has a GCP table"
    gcp = dict(re.findall(r'\("([a-z0-9-]+)",\s*"([A-Z0-9-]+)"\)', table.group(1)))
    assert len(gcp) > 30
    v = variables(tf)
    assert gcp[v["region"]["default"]] == v["grid_zone"]["default"]


def test_regional_cluster_with_node_pool_over_zones_and_grid_zone_label(tf):
    (cluster,) = resources(tf, "google_container_cluster").values()
    assert cluster["location"] == "${var.region}", "regional, not zonal"
    assert cluster["remove_default_node_pool"] is True
    assert cluster["workload_identity_config"][0]["workload_pool"] == "${var.project_id}.svc.id.goog"
    assert cluster["private_cluster_config"][0]["enable_private_nodes"] is True
    assert cluster["release_channel"][0]["channel"] == "${var.release_channel}"
    (pool,) = resources(tf, "google_container_node_pool").values()
    assert pool["location"] == "${var.region}"
    assert pool["node_count"] == "${var.nodes_per_zone}"
    node = pool["node_config"][0]
    assert node["labels"] == {"carbon-kube.io/grid-zone": "${var.grid_zone}"}
    assert node["workload_metadata_config"][0]["mode"] == "GKE_METADATA"
    assert node["service_account"] == "${google_service_account.nodes.email}"


def test_keys_live_in_secret_manager_and_never_in_the_module(tf):
    assert resources(tf, "google_secret_manager_secret")
    assert not resources(tf, "google_secret_manager_secret_version"), "a version would put key material into state"
    (member,) = resources(tf, "google_secret_manager_secret_iam_member").values()
    assert member["role"] == "roles/secretmanager.secretAccessor"
    assert "/subject/ns/${local.eso_namespace}/sa/${local.eso_service_account}" in member["member"]
    for f in MODULE.rglob("*.tf"):
        text = f.read_text()
        # The only mentions of credential value names are the validation that rejects them.
        for m in re.finditer(r"apiKey|password", text):
            line = text[: m.start()].count("\n")
            assert "can(var.chart_values" in text.splitlines()[line] or "error_message" in text.splitlines()[line] or "description" in text.splitlines()[line], f"{f.name}:{line + 1}"


def test_chart_is_this_repositorys_and_gets_the_synced_secret(tf):
    releases = resources(tf, "helm_release")
    assert set(releases) == {"external_secrets", "provider_keys_sync", "carbon_kube"}
    ck = releases["carbon_kube"]
    locals_ = {k: v for block in tf["locals"] for k, v in block.items()}
    assert ck["chart"] == "${local.chart_dir}"
    chart_dir = (MODULE / locals_["chart_dir"].replace("${path.module}/", "")).resolve()
    assert chart_dir == REPO / "charts" / "carbon-kube"
    assert (chart_dir / "Chart.yaml").is_file()
    assert "existingSecret  = local.provider_keys_k8s_secret" in (MODULE / "main.tf").read_text()
    assert releases["provider_keys_sync"]["depends_on"] == ["${helm_release.external_secrets}", "${google_secret_manager_secret_iam_member.eso}"]
    assert releases["external_secrets"]["version"] == "${var.eso_chart_version}"


def helm():
    path = os.environ.get("CARBON_KUBE_IAC_HELM")
    if not path or not Path(path).is_file():
        pytest.fail("CARBON_KUBE_IAC_HELM is not set to a helm binary: run hack/iac-test.sh")
    return path


def test_charts_render_with_the_modules_values(tmp_path):
    sync = subprocess.run(
        [helm(), "template", "sync", str(MODULE / "charts/provider-keys-sync"), "--namespace", "carbon-kube",
         "--set", "gcpProjectId=my-project-123"],
        check=True, capture_output=True, text=True).stdout
    assert "kind: ExternalSecret" in sync and "projectID: \"my-project-123\"" in sync
    assert "name: carbon-kube-provider-keys" in sync
    failed = subprocess.run([helm(), "template", "sync", str(MODULE / "charts/provider-keys-sync")], capture_output=True, text=True)
    assert failed.returncode != 0 and "gcpProjectId is required" in failed.stderr

    values = tmp_path / "values.json"
    values.write_text(json.dumps({"existingSecret": "carbon-kube-provider-keys", "electricityMaps": {"zones": ["FI", "DE"]}}))
    out = subprocess.run(
        [helm(), "template", "carbon-kube", str(REPO / "charts/carbon-kube"), "--namespace", "carbon-kube",
         "--kube-version", "1.34.0", "-f", str(values)],
        check=True, capture_output=True, text=True).stdout
    assert "--zones=FI,DE" in out
    assert not re.search(r"^kind: Secret$", out, re.M)
