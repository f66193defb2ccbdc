// One region: VPC, EKS cluster with a managed node group per availability
// zone, the provider keys in Secrets Manager synced into the cluster by the
// External Secrets Operator, and the Carbon-Kube chart from this repository.
import * as path from 'path';
import { KubectlV36Layer } from '@aws-cdk/lambda-layer-kubectl-v36';
import { Annotations, Aspects, CfnOutput, Duration, Stack, StackProps, Tags } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as eks from 'aws-cdk-lib/aws-eks-v2';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as s3assets from 'aws-cdk-lib/aws-s3-assets';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { AcceptFindings } from './accepted-findings';
import type { AppConfig, ClusterConfig } from './config';

/** Namespace of the Carbon-Kube release. */
export const CARBON_KUBE_NAMESPACE = 'carbon-kube';
/** The Kubernetes Secret the External Secrets Operator writes and the chart reads (`existingSecret`). */
export const PROVIDER_KEYS_SECRET = 'carbon-kube-provider-keys';
/** External Secrets Operator: namespace, service account and chart version (its app version). */
export const ESO_NAMESPACE = 'external-secrets';
export const ESO_SERVICE_ACCOUNT = 'external-secrets';
export const ESO_CHART_VERSION = '1.3.2';
export const ESO_CHART_REPOSITORY = 'https://charts.external-secrets.io';
/** Node label that names a node's grid zone; it wins over the built-in region tables. */
export const GRID_ZONE_LABEL = 'carbon-kube.io/grid-zone';
/** The chart directory of this repository. */
export const CHART_DIR = path.resolve(__dirname, '..', '..', '..', 'charts', 'carbon-kube');

export interface CarbonKubeStackProps extends StackProps {
  readonly cluster: ClusterConfig;
  /** Grid zones of every cluster of the app: each poller fetches all of them. */
  readonly allGridZones: string[];
  readonly config: AppConfig;
}

/** Deep merge of plain objects (`over` wins; arrays are replaced, not merged). */
export function mergeValues(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    const plain = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
    out[k] = plain(b) && plain(v) ? mergeValues(b, v) : v;
  }
  return out;
}

/** The chart values the app installs: its own (secret, zones) under the context's `chartValues`. */
export function chartValues(props: Pick<CarbonKubeStackProps, 'allGridZones' | 'config'>): Record<string, unknown> {
  const own = {
    existingSecret: PROVIDER_KEYS_SECRET,
    electricityMaps: { zones: props.allGridZones },
  };
  // The context may add to and override the zones, never the secret (checked in config.ts).
  return mergeValues(own, props.config.chartValues);
}

export class CarbonKubeStack extends Stack {
  readonly cluster: eks.Cluster;
  readonly providerKeys: secretsmanager.Secret;

  constructor(scope: Construct, id: string, props: CarbonKubeStackProps) {
    super(scope, id, props);
    const { cluster: placement, config } = props;
    Tags.of(this).add('app.kubernetes.io/part-of', 'carbon-kube');
    Tags.of(this).add('carbon-kube.io/grid-zone', placement.gridZone);

    const vpc = new ec2.Vpc(this, 'Vpc', {
      availabilityZones: placement.availabilityZones,
      natGateways: config.natGateways,
      subnetConfiguration: [
        { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 },
        { name: 'nodes', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 20 },
      ],
    });
    vpc.addFlowLog('FlowLog');

    // Customer-managed keys: one for the cluster's Kubernetes Secrets
    // (envelope encryption), one for the provider keys in Secrets Manager.
    // Two, not one: the operator's role is granted decrypt in the second
    // key's policy, and that role depends on the cluster (one shared key is a
    // circular dependency, as cfn-lint reports).
    const clusterKey = new kms.Key(this, 'ClusterSecretsKey', {
      description: 'Carbon-Kube: envelope encryption of the EKS cluster Secrets',
      enableKeyRotation: true,
    });
    const providerKeysKey = new kms.Key(this, 'ProviderKeysKey', {
      description: 'Carbon-Kube: the provider API keys in Secrets Manager',
      enableKeyRotation: true,
    });

    // The API endpoint is public and private; the kubectl provider Lambda
    // runs in the private subnets, so restricting the public side to the
    // operators' CIDRs does not cut off the deploy.
    if (config.apiAllowedCidrs.length === 0) {
      Annotations.of(this).addWarningV2('carbon-kube:openApiEndpoint',
        'the EKS API endpoint accepts connections from the whole internet (authenticated); set -c apiAllowedCidrs=YOUR/32 to restrict it');
    }
    const endpointAccess = config.apiAllowedCidrs.length > 0
      ? eks.EndpointAccess.PUBLIC_AND_PRIVATE.onlyFrom(...config.apiAllowedCidrs)
      : eks.EndpointAccess.PUBLIC_AND_PRIVATE;

    this.cluster = new eks.Cluster(this, 'Cluster', {
      endpointAccess,
      secretsEncryptionKey: clusterKey,
      version: eks.KubernetesVersion.of(config.kubernetesVersion),
      vpc,
      vpcSubnets: [{ subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS }],
      defaultCapacityType: eks.DefaultCapacityType.NODEGROUP,
      defaultCapacity: 0,
      kubectlProviderOptions: { kubectlLayer: new KubectlV36Layer(this, 'KubectlLayer') },
      clusterLogging: [
        eks.ClusterLoggingTypes.API,
        eks.ClusterLoggingTypes.AUDIT,
        eks.ClusterLoggingTypes.AUTHENTICATOR,
      ],
    });

    // One managed node group per zone, so every zone keeps nodes when one
    // group scales or is replaced. Kubernetes sets
    // topology.kubernetes.io/region and /zone on every node; the grid-zone
    // label makes the zone the poller fetches and the zone the extender
    // looks up the same by construction.
    for (const az of placement.availabilityZones) {
      this.cluster.addNodegroupCapacity(`Nodes-${az}`, {
        subnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, availabilityZones: [az] },
        instanceTypes: [new ec2.InstanceType(config.nodeInstanceType)],
        amiType: eks.NodegroupAmiType.AL2023_X86_64_STANDARD,
        minSize: config.nodesPerZone,
        desiredSize: config.nodesPerZone,
        maxSize: config.nodesPerZone * 3,
        labels: { [GRID_ZONE_LABEL]: placement.gridZone },
      });
    }

    // The provider keys: a JSON object whose keys are the chart's Secret keys
    // (electricity-maps-key, noaa-key, watttime-username, watttime-password).
    // Created empty; the operator puts the values in with
    // `aws secretsmanager put-secret-value` (docs/deploy.md). Every key is
    // optional: with none, the poller uses its free providers.
    this.providerKeys = new secretsmanager.Secret(this, 'ProviderKeys', {
      secretName: config.providerKeysSecretName,
      description: 'Carbon-Kube provider API keys (JSON object: electricity-maps-key, noaa-key, watttime-username, watttime-password)',
      secretObjectValue: {},
      encryptionKey: providerKeysKey,
    });

    const namespaces = this.cluster.addManifest('Namespaces',
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ESO_NAMESPACE } },
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: CARBON_KUBE_NAMESPACE } },
    );

    // Only the External Secrets Operator needs AWS access (read this one
    // secret); no Carbon-Kube component does, so none has an AWS identity.
    const esoAccount = this.cluster.addServiceAccount('EsoServiceAccount', {
      name: ESO_SERVICE_ACCOUNT,
      namespace: ESO_NAMESPACE,
      identityType: eks.IdentityType.POD_IDENTITY,
    });
    esoAccount.node.addDependency(namespaces);
    this.providerKeys.grantRead(esoAccount);

    const eso = this.cluster.addHelmChart('ExternalSecrets', {
      chart: 'external-secrets',
      repository: ESO_CHART_REPOSITORY,
      version: ESO_CHART_VERSION,
      release: 'external-secrets',
      namespace: ESO_NAMESPACE,
      createNamespace: false,
      wait: true,
      values: {
        installCRDs: true,
        serviceAccount: { create: false, name: ESO_SERVICE_ACCOUNT },
      },
    });
    eso.node.addDependency(esoAccount);

    const sync = this.cluster.addManifest('ProviderKeysSync',
      {
        apiVersion: 'external-secrets.io/v1',
        kind: 'SecretStore',
        metadata: { name: 'aws-secrets-manager', namespace: CARBON_KUBE_NAMESPACE },
        // No auth block: the operator's own Pod Identity credentials.
        spec: { provider: { aws: { service: 'SecretsManager', region: this.region } } },
      },
      {
        apiVersion: 'external-secrets.io/v1',
        kind: 'ExternalSecret',
        metadata: { name: PROVIDER_KEYS_SECRET, namespace: CARBON_KUBE_NAMESPACE },
        spec: {
          refreshInterval: '1h',
          secretStoreRef: { kind: 'SecretStore', name: 'aws-secrets-manager' },
          target: { name: PROVIDER_KEYS_SECRET, creationPolicy: 'Owner' },
          dataFrom: [{ extract: { key: config.providerKeysSecretName } }],
        },
      },
    );
    sync.node.addDependency(eso);

    const chart = this.cluster.addHelmChart('CarbonKube', {
      chartAsset: new s3assets.Asset(this, 'ChartAsset', { path: CHART_DIR }),
      release: 'carbon-kube',
      namespace: CARBON_KUBE_NAMESPACE,
      createNamespace: false,
      wait: true,
      timeout: Duration.minutes(10),
      values: chartValues(props),
    });
    chart.node.addDependency(sync);

    Aspects.of(this).add(new AcceptFindings());

    new CfnOutput(this, 'ClusterName', { value: this.cluster.clusterName });
    new CfnOutput(this, 'GridZone', { value: placement.gridZone });
    new CfnOutput(this, 'ProviderKeysSecretArn', { value: this.providerKeys.secretArn });
    new CfnOutput(this, 'KubeconfigCommand', {
      value: `aws eks update-kubeconfig --region ${this.region} --name ${this.cluster.clusterName}`,
    });
  }
}
