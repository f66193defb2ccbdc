// Reads the app's CDK context (cdk.json, `-c key=value`) into a validated
// configuration, once. Every problem is reported with its context key, all at
// once, before any construct is built.

/** One cluster's placement: the AWS region and the grid zone its nodes draw power from. */
export interface ClusterConfig {
  /** Stack id suffix: `Primary` or `Secondary`. */
  readonly role: 'Primary' | 'Secondary';
  /** AWS region, e.g. `eu-west-2`. */
  readonly region: string;
  /** Availability zones the VPC and node groups use (one managed node group per zone). */
  readonly availabilityZones: string[];
  /** Electricity Maps zone of the region (the `carbon-kube.io/grid-zone` node label). */
  readonly gridZone: string;
}

/** The validated configuration of the whole app. */
export interface AppConfig {
  readonly clusters: ClusterConfig[];
  /** EKS Kubernetes version, `1.NN`. */
  readonly kubernetesVersion: string;
  readonly nodeInstanceType: string;
  /** Nodes per availability zone (the node group's minimum and desired size). */
  readonly nodesPerZone: number;
  readonly natGateways: number;
  /** Name of the Secrets Manager secret (JSON object) with the provider keys, per region. */
  readonly providerKeysSecretName: string;
  /** CIDRs allowed to reach the public API endpoint; empty: the whole internet (CDK's default). */
  readonly apiAllowedCidrs: string[];
  /** Chart values from context, merged over the app's own (never API keys). */
  readonly chartValues: Record<string, unknown>;
}

/** Reads a context key; `undefined` when it is not set. */
export type ContextReader = (key: string) => unknown;

const REGION = /^[a-z]{2}(-gov)?-[a-z]+-\d$/;
const GRID_ZONE = /^[A-Z]{2}(-[A-Z0-9]+)*$/;
const K8S_VERSION = /^1\.(\d+)$/;
const INSTANCE_TYPE = /^[a-z][a-z0-9-]*\.[a-z0-9]+$/;
const CIDR = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}\/(3[0-2]|[12]?\d)$/;
// Chart values that hold credentials: they must come from Secrets Manager,
// never from context (context ends up in the template and in git).
const CREDENTIAL_VALUES = [
  ['electricityMaps', 'apiKey'],
  ['noaa', 'apiKey'],
  ['watttime', 'username'],
  ['watttime', 'password'],
];
// Chart values the app sets itself from other context keys.
const APP_OWNED_VALUES = ['existingSecret'];

/** Thrown with every problem of the context, one per line, each naming its key. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid CDK context:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
  }
}

/** Parses and validates the context; throws `ConfigError` listing every problem. */
export function readConfig(ctx: ContextReader): AppConfig {
  const problems: string[] = [];

  const str = (key: string, re: RegExp, what: string): string => {
    const v = ctx(key);
    if (typeof v !== 'string' || !re.test(v)) {
      problems.push(`${key}: ${JSON.stringify(v)} is not ${what}`);
      return '';
    }
    return v;
  };
  const int = (key: string, min: number, max: number): number => {
    const raw = ctx(key);
    // `-c key=3` arrives as a string, cdk.json as a number.
    const v = typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : raw;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      problems.push(`${key}: ${JSON.stringify(raw)} is not an integer from ${min} to ${max}`);
      return min;
    }
    return v;
  };
  const azs = (key: string, region: string): string[] => {
    const raw = ctx(key);
    if (raw === undefined) {
      // a, b, c exist in every region with three or more zones.
      return region ? ['a', 'b', 'c'].map((s) => `${region}${s}`) : [];
    }
    const list = typeof raw === 'string' ? raw.split(',').map((s) => s.trim()) : raw;
    if (!Array.isArray(list) || list.length < 2 || list.some((z) => typeof z !== 'string' || !z.startsWith(region) || !/^[a-z]$/.test(z.slice(region.length)))) {
      problems.push(`${key}: ${JSON.stringify(raw)} is not a list of two or more zones of ${region} (e.g. ${region}a,${region}b)`);
      return [];
    }
    return list as string[];
  };

  const clusters: ClusterConfig[] = (['Primary', 'Secondary'] as const).map((role) => {
    const p = role.toLowerCase();
    const region = str(`${p}Region`, REGION, 'an AWS region (e.g. eu-west-2)');
    return {
      role,
      region,
      availabilityZones: azs(`${p}AvailabilityZones`, region),
      gridZone: str(`${p}GridZone`, GRID_ZONE, 'an Electricity Maps zone id (e.g. GB, DE, US-NW-PACW)'),
    };
  });
  if (clusters[0].region && clusters[0].region === clusters[1].region) {
    problems.push(`secondaryRegion: ${clusters[1].region} is the primary region too; two regions are the point of two stacks`);
  }

  const kubernetesVersion = str('kubernetesVersion', K8S_VERSION, 'a Kubernetes version 1.NN');
  const minor = Number(K8S_VERSION.exec(kubernetesVersion)?.[1] ?? 0);
  if (kubernetesVersion && (minor < 29 || minor > 36)) {
    // The chart needs >= 1.29; the kubectl layer bundled here is 1.36 (kubectl supports one minor of skew).
    problems.push(`kubernetesVersion: ${kubernetesVersion} is not between 1.29 (the chart's minimum) and 1.36 (the kubectl layer's version)`);
  }
  const nodeInstanceType = str('nodeInstanceType', INSTANCE_TYPE, 'an EC2 instance type (e.g. m7i.large)');
  const nodesPerZone = int('nodesPerZone', 1, 100);
  const natGateways = int('natGateways', 1, 3);
  const providerKeysSecretName = str('providerKeysSecretName', /^[A-Za-z0-9/_+=.@-]{1,512}$/, 'a Secrets Manager secret name');

  const rawCidrs = ctx('apiAllowedCidrs') ?? '';
  const cidrList = typeof rawCidrs === 'string' ? rawCidrs.split(',').map((c) => c.trim()).filter((c) => c !== '') : rawCidrs;
  let apiAllowedCidrs: string[] = [];
  if (!Array.isArray(cidrList) || cidrList.some((c) => typeof c !== 'string' || !CIDR.test(c))) {
    problems.push(`apiAllowedCidrs: ${JSON.stringify(rawCidrs)} is not a list of IPv4 CIDR blocks (e.g. 203.0.113.7/32,198.51.100.0/24)`);
  } else {
    apiAllowedCidrs = cidrList as string[];
  }

  const rawValues = ctx('chartValues') ?? {};
  let chartValues: Record<string, unknown> = {};
  if (typeof rawValues === 'string') {
    try {
      chartValues = JSON.parse(rawValues);
    } catch (e) {
      problems.push(`chartValues: not JSON (${(e as Error).message})`);
    }
  } else if (typeof rawValues === 'object' && rawValues !== null && !Array.isArray(rawValues)) {
    chartValues = rawValues as Record<string, unknown>;
  } else {
    problems.push(`chartValues: ${JSON.stringify(rawValues)} is not an object of Helm values`);
  }
  for (const path of CREDENTIAL_VALUES) {
    const v = path.reduce<unknown>((o, k) => (o && typeof o === 'object' ? (o as Record<string, unknown>)[k] : undefined), chartValues);
    if (v !== undefined && v !== '') {
      problems.push(`chartValues.${path.join('.')}: credentials never go into context or the template; put them into the Secrets Manager secret ${providerKeysSecretName || '(providerKeysSecretName)'}`);
    }
  }
  for (const key of APP_OWNED_VALUES) {
    if (key in chartValues) {
      problems.push(`chartValues.${key}: set by the app (the Secret synced from Secrets Manager); remove it`);
    }
  }

  if (problems.length > 0) {
    throw new ConfigError(problems);
  }
  return { clusters, kubernetesVersion, nodeInstanceType, nodesPerZone, natGateways, providerKeysSecretName, apiAllowedCidrs, chartValues };
}
