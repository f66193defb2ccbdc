// Builds the CDK app from its context: one CarbonKubeStack per region.
import { App, AppProps } from 'aws-cdk-lib';
import { CarbonKubeStack } from './carbon-kube-stack';
import { readConfig } from './config';

/** Stack ids, as the original design names them. */
export const STACK_IDS = ['CarbonKubeStack-Primary', 'CarbonKubeStack-Secondary'] as const;

/** The app and its two stacks; throws `ConfigError` on bad context. */
export function buildApp(props?: AppProps): { app: App; stacks: CarbonKubeStack[] } {
  const app = new App(props);
  const config = readConfig((key) => app.node.tryGetContext(key));
  const allGridZones = [...new Set(config.clusters.map((c) => c.gridZone))];
  const stacks = config.clusters.map(
    (cluster) =>
      new CarbonKubeStack(app, `CarbonKubeStack-${cluster.role}`, {
        // The account comes from the deploying credentials; synth needs none.
        env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: cluster.region },
        description: `Carbon-Kube: EKS in ${cluster.region} (grid zone ${cluster.gridZone}) with the carbon-kube chart`,
        cluster,
        allGridZones,
        config,
      }),
  );
  return { app, stacks };
}
