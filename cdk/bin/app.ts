#!/usr/bin/env node
// Entry point of `cdk synth` / `cdk deploy` (cdk.json).
import { buildApp } from '../lib/app';
import { ConfigError } from '../lib/config';

try {
  buildApp().app.synth();
} catch (e) {
  if (e instanceof ConfigError) {
    console.error(e.message);
    process.exit(1);
  }
  throw e;
}
