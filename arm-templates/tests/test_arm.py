"""Offline proofs of arm-templates/main.json and the Flux manifests it
installs: a structural schema, expression consistency (every parameter,
variable, dependsOn and reference resolves), the cluster's shape, no secret
in the template, Flux substitution variables that match between main.json
and the manifests, and the chart rendered with the values Flux passes.

Not proven here: that Azure Resource Manager accepts the template (Microsoft's
deploymentTemplate schema and `az deployment group validate` need the network
and an account; docs/deploy.md). Run through hack/iac-test.sh.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

HERE = Path(__file__).resolve().parents[1]
REPO = HERE.parent
TEMPLATE = json.loads((HERE / "main.json").read_text())

# The part of the deploymentTemplate schema this template relies on (written
# here: Microsoft's schema is not available offline).
STRUCTURE = {
    "type": "object",
    "required": ["$schema", "contentVersion", "parameters", "variables", "resources", "outputs"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"const": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"},
        "contentVersion": {"pattern": r"^\d+\.\d+\.\d+\.\d+$"},
        "metadata": {"type": "object"},
        "parameters": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["type", "metadata"],
                "properties": {
                    "type": {"enum": ["string", "securestring", "int", "bool", "object", "secureObject", "array"]},
                    "metadata": {"type": "object", "required": ["description"]},
                },
            },
        },
        "variables": {"type": "object"},
        "resources": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["type", "apiVersion", "name"],
                "properties": {
                    "type": {"pattern": r"^Microsoft\.[A-Za-z]+/[A-Za-z]+(/[A-Za-z]+)*$"},
                    "apiVersion": {"pattern": r"^\d{4}-\d{2}-\d{2}(-preview)?$"},
                    "dependsOn": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
        "outputs": {
            "type": "object",
            "additionalProperties": {"type": "object", "required": ["type", "value"]},
        },
    },
}


def strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield k
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)


def expressions():
    return [s for s in strings(TEMPLATE) if s.startswith("[") and not s.startswith("[[")]


def resource(rtype):
    found = [r for r in TEMPLATE["resources"] if r["type"] == rtype]
    assert len(found) == 1, rtype
    return found[0]


def test_template_matches_the_structural_schema():
    jsonschema.validate(TEMPLATE, STRUCTURE)
    # And the schema does reject a broken template.
    broken = dict(TEMPLATE, resources=[{"type": "Microsoft.Foo/bars", "name": "x"}])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, STRUCTURE)


def test_expressions_are_balanced():
    for e in expressions():
        assert e.endswith("]"), e
        depth = 0
        in_str = False
        for ch in e[1:-1]:
            if ch == "'":
                in_str = not in_str
            elif not in_str and ch == "(":
                depth += 1
            elif not in_str and ch == ")":
                depth -= 1
                assert depth >= 0, e
        assert depth == 0 and not in_str, e


def test_every_parameter_and_variable_is_declared_and_used():
    text = json.dumps(TEMPLATE)
    used_params = set(re.findall(r"parameters\('([A-Za-z0-9]+)'\)", text))
    used_vars = set(re.findall(r"variables\('([A-Za-z0-9]+)'\)", text))
    assert used_params == set(TEMPLATE["parameters"]), "declared vs used parameters"
    assert used_vars == set(TEMPLATE["variables"]), "declared vs used variables"


def test_dependencies_and_references_resolve_to_resources_of_this_template():
    types = {r["type"]: r["apiVersion"] for r in TEMPLATE["resources"]}
    for e in expressions():
        for rtype in re.findall(r"resourceId\('([A-Za-z./]+)'", e):
            if rtype.startswith("Microsoft.Authorization/roleDefinitions"):
                continue  # built-in role, not deployed here
            assert rtype in types, f"{e}: {rtype} is not deployed by this template"
        for rtype, api in re.findall(r"reference\(resourceId\('([A-Za-z./]+)'[^)]*\), '([0-9-]+)'\)", e):
            assert types[rtype] == api, f"{e}: reference uses {api}, the resource is deployed with {types[rtype]}"
    for r in TEMPLATE["resources"]:
        for dep in r.get("dependsOn", []):
            assert re.match(r"^\[(resourceId|extensionResourceId)\(", dep), dep


def test_parameter_constraints():
    p = TEMPLATE["parameters"]
    required = sorted(n for n, v in p.items() if "defaultValue" not in v)
    assert required == ["authorizedIpRanges", "gridZone"]
    assert p["authorizedIpRanges"]["minLength"] == 1
    assert (p["workloadNodesPerZone"]["minValue"], p["workloadNodesPerZone"]["maxValue"]) == (1, 100)
    assert p["availabilityZones"]["defaultValue"] == ["1", "2", "3"]
    minor = int(p["kubernetesVersion"]["defaultValue"].split(".")[1])
    assert minor >= 29, "the chart needs Kubernetes 1.29 or newer"


def test_cluster_node_pools_span_zones_with_grid_zone_labels_and_workload_identity():
    aks = resource("Microsoft.ContainerService/managedClusters")["properties"]
    pools = {pool["name"]: pool for pool in aks["agentPoolProfiles"]}
    assert set(pools) == {"system", "workload"}
    assert pools["system"]["mode"] == "System" and pools["workload"]["mode"] == "User"
    for pool in pools.values():
        assert pool["availabilityZones"] == "[parameters('availabilityZones')]"
        assert pool["nodeLabels"] == {"carbon-kube.io/grid-zone": "[parameters('gridZone')]"}
        assert pool["osDiskType"] == "Ephemeral"
    assert pools["workload"]["enableAutoScaling"] is True
    assert aks["oidcIssuerProfile"]["enabled"] is True
    assert aks["securityProfile"]["workloadIdentity"]["enabled"] is True
    assert aks["disableLocalAccounts"] is True and aks["aadProfile"]["enableAzureRBAC"] is True
    assert aks["networkProfile"]["networkPolicy"] == "cilium"


def test_keys_live_in_key_vault_and_never_in_the_template():
    text = json.dumps(TEMPLATE)
    assert "Microsoft.KeyVault/vaults/secrets" not in text, "a secret resource would put key material in the deployment"
    for name, param in TEMPLATE["parameters"].items():
        assert not re.search(r"key$|password|token", name, re.I) or name == "keyVaultName", name
    vault = resource("Microsoft.KeyVault/vaults")["properties"]
    assert vault["enableRbacAuthorization"] is True and vault["enablePurgeProtection"] is True
    role = resource("Microsoft.Authorization/roleAssignments")
    assert TEMPLATE["variables"]["keyVaultSecretsUserRole"] == "4633458b-17de-408a-b874-0445c86b69e6"  # Key Vault Secrets User (read only)
    assert role["scope"] == "[format('Microsoft.KeyVault/vaults/{0}', parameters('keyVaultName'))]"
    fic = resource("Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials")["properties"]
    assert fic["subject"] == "[format('system:serviceaccount:{0}:{1}', variables('esoNamespace'), variables('esoServiceAccount'))]"
    assert (TEMPLATE["variables"]["esoNamespace"], TEMPLATE["variables"]["esoServiceAccount"]) == ("external-secrets", "external-secrets")


def flux_docs(kustomization):
    kdir = HERE / "flux" / kustomization
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    docs = []
    for f in k["resources"]:
        assert (kdir / f).is_file(), f"{kustomization}/{f} listed but missing"
        docs.append((kdir / f).read_text())
    return docs


def test_flux_kustomizations_and_substitutions_agree_with_main_json():
    flux = resource("Microsoft.KubernetesConfiguration/fluxConfigurations")
    assert flux["properties"]["sourceKind"] == "GitRepository"
    kustomizations = flux["properties"]["kustomizations"]
    assert set(kustomizations) == {"infra", "apps"}
    assert kustomizations["apps"]["dependsOn"] == ["infra"]
    for name, k in kustomizations.items():
        assert k["path"] == f"./arm-templates/flux/{name}"
        used = set()
        for doc in flux_docs(name):
            used |= set(re.findall(r"\$\{([A-Z_]+)\}", doc))
            for obj in yaml.safe_load_all(doc):
                assert obj["apiVersion"] and obj["kind"] and obj["metadata"]["name"]
        assert used == set(k["postBuild"]["substitute"]), f"{name}: manifests use {used}"
    # The chart comes from the GitRepository the configuration creates (named after it).
    (release,) = [o for o in yaml.safe_load_all(flux_docs("apps")[1]) if o["kind"] == "HelmRelease"]
    spec = release["spec"]["chart"]["spec"]
    assert spec["sourceRef"] == {"kind": "GitRepository", "name": flux["name"], "namespace": flux["properties"]["namespace"]}
    assert (REPO / spec["chart"] / "Chart.yaml").is_file()


def test_example_parameters_and_the_extenders_zone_table_agree():
    example = json.loads((HERE / "main.parameters.example.json").read_text())["parameters"]
    required = {n for n, v in TEMPLATE["parameters"].items() if "defaultValue" not in v}
    assert required <= set(example)
    src = (REPO / "crates/carbon-kube-policy/src/zone_map/builtin.rs").read_text()
    table = re.search(r"pub const AZURE: &\[\(&str, &str\)\] = &\[(.*?)\];", src, re.S)
    assert table
    azure = dict(re.findall(r'\("([a-z0-9]+)",\s*"([A-Z0-9-]+)"\)', table.group(1)))
    assert azure[example["location"]["value"]] == example["gridZone"]["value"]


def test_chart_renders_with_the_values_flux_passes(tmp_path):
    helm = os.environ.get("CARBON_KUBE_IAC_HELM")
    if not helm or not Path(helm).is_file():
        pytest.fail("CARBON_KUBE_IAC_HELM is not set to a helm binary: run hack/iac-test.sh")
    doc = flux_docs("apps")[1]
    # What Flux substitutes (main.json: GRID_ZONES is string(array), i.e. JSON).
    doc = doc.replace("${PROVIDER_KEYS_SECRET}", TEMPLATE["variables"]["providerKeysSecretName"]).replace("${GRID_ZONES}", json.dumps(["NL", "DE"]))
    (release,) = [o for o in yaml.safe_load_all(doc) if o["kind"] == "HelmRelease"]
    values = tmp_path / "values.json"
    values.write_text(json.dumps(release["spec"]["values"]))
    out = subprocess.run(
        [helm, "template", "carbon-kube", str(REPO / "charts/carbon-kube"), "--namespace", "carbon-kube",
         "--kube-version", TEMPLATE["parameters"]["kubernetesVersion"]["defaultValue"] + ".0", "-f", str(values)],
        check=True, capture_output=True, text=True).stdout
    assert "--zones=NL,DE" in out
    assert "name: carbon-kube-provider-keys" in out
    assert not re.search(r"^kind: Secret$", out, re.M)
