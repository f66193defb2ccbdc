// Policy-scan (checkov) findings accepted on purpose, each with its reason.
// An aspect writes them into the synthesized template as resource Metadata
// (`checkov: skip: [{id, comment}]`), so the scan skips exactly these
// resources for exactly these checks; docs/deploy.md lists them too (a test
// checks that it does).
import { Annotations, CfnResource, IAspect } from 'aws-cdk-lib';
import { IConstruct } from 'constructs';

export interface AcceptedFinding {
  /** CloudFormation resource type the finding is accepted for. */
  readonly resourceType: string;
  /** Checkov check id. */
  readonly id: string;
  /** Why it is accepted. */
  readonly comment: string;
}

const KUBECTL_LAMBDA = "CDK's kubectl-provider Lambda, invoked only by CloudFormation during deploys";

export const ACCEPTED_FINDINGS: AcceptedFinding[] = [
  { resourceType: 'AWS::Lambda::Function', id: 'CKV_AWS_116', comment: `${KUBECTL_LAMBDA}: CloudFormation reports failures, a dead-letter queue would hold nothing useful` },
  { resourceType: 'AWS::Lambda::Function', id: 'CKV_AWS_115', comment: `${KUBECTL_LAMBDA}: runs a handful of times per deploy, a concurrency limit protects nothing` },
  { resourceType: 'AWS::Lambda::Function', id: 'CKV_AWS_173', comment: `${KUBECTL_LAMBDA}: its environment holds no secret (cluster name, role ARN), AWS-managed encryption applies` },
  { resourceType: 'AWS::Logs::LogGroup', id: 'CKV_AWS_158', comment: 'VPC flow-log group: connection metadata only, encrypted at rest by CloudWatch Logs with an AWS-owned key; a CMK would need a key policy for the logs service per region' },
];

/** Adds the accepted findings to the matching resources' Metadata. */
export class AcceptFindings implements IAspect {
  visit(node: IConstruct): void {
    if (!(node instanceof CfnResource)) {
      return;
    }
    const skips = ACCEPTED_FINDINGS.filter((f) => f.resourceType === node.cfnResourceType).map(({ id, comment }) => ({ id, comment }));
    if (skips.length > 0) {
      node.addMetadata('checkov', { skip: skips });
      Annotations.of(node).addInfo(`checkov findings accepted: ${skips.map((s) => s.id).join(', ')} (docs/deploy.md)`);
    }
  }
}
