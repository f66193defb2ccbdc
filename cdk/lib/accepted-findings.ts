// Policy-scan (checkov) findings accepted on purpose, each with its reason.
// An aspect writes them into the synthesized template as resource Metadata
// (`checkov: skip: [{id, comment}]`), so the scan skips exactly these
// resources for exactly these checks; docs/deploy.md lists them too
// (hack/iac/check_accepted_findings.py checks that it does).
import { CfnResource, IAspect } from 'aws-cdk-lib';
import { IConstruct } from 'constructs';

export interface AcceptedFinding {
  /** CloudFormation resource type the finding is accepted for. */
  readonly resourceType: string;
  /** Only resources whose construct path contains one of these. */
  readonly pathIncludes: string[];
  /** Checkov check id. */
  readonly id: string;
  /** Why it is accepted. */
  readonly comment: string;
}

// CDK's own deploy-time Lambdas: the kubectl provider (Helm charts and
// manifests) and the handler that empties the VPC's default security group.
const DEPLOY_LAMBDAS = ['/KubectlProvider/', '/Custom::VpcRestrictDefaultSGCustomResourceProvider/'];
const WHY = "CDK's deploy-time Lambda (kubectl provider, default security group handler), invoked only by CloudFormation during deploys";

export const ACCEPTED_FINDINGS: AcceptedFinding[] = [
  { resourceType: 'AWS::Lambda::Function', pathIncludes: DEPLOY_LAMBDAS, id: 'CKV_AWS_116', comment: `${WHY}: CloudFormation reports failures, a dead-letter queue would hold nothing useful` },
  { resourceType: 'AWS::Lambda::Function', pathIncludes: DEPLOY_LAMBDAS, id: 'CKV_AWS_115', comment: `${WHY}: runs a handful of times per deploy, a concurrency limit protects nothing` },
  { resourceType: 'AWS::Lambda::Function', pathIncludes: DEPLOY_LAMBDAS, id: 'CKV_AWS_173', comment: `${WHY}: its environment holds no secret, AWS-managed encryption applies` },
  { resourceType: 'AWS::Lambda::Function', pathIncludes: ['/Custom::VpcRestrictDefaultSGCustomResourceProvider/'], id: 'CKV_AWS_117', comment: 'CDK\'s default security group handler calls only the EC2 API at deploy time; it is a stack-wide singleton outside the VPC it edits' },
  { resourceType: 'AWS::Logs::LogGroup', pathIncludes: ['/FlowLog/', '/KubectlProvider/'], id: 'CKV_AWS_158', comment: 'VPC flow logs and the kubectl provider\'s logs: connection metadata and deploy logs (no secrets), encrypted at rest by CloudWatch Logs with an AWS-owned key; a CMK would need a key policy for the logs service per region' },
];

/** Adds the accepted findings to the matching resources' Metadata. */
export class AcceptFindings implements IAspect {
  visit(node: IConstruct): void {
    if (!(node instanceof CfnResource)) {
      return;
    }
    const path = `/${node.node.path}/`;
    const skips = ACCEPTED_FINDINGS
      .filter((f) => f.resourceType === node.cfnResourceType && f.pathIncludes.some((p) => path.includes(p)))
      .map(({ id, comment }) => ({ id, comment }));
    if (skips.length > 0) {
      node.addMetadata('checkov', { skip: skips });
    }
  }
}
