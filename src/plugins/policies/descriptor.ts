import type { PluginDescriptor } from '../types';
import { bodyLimitPlugin, corsPlugin, deprecationPlugin, envelopePlugin, headerRulesPlugin, ipRulesPlugin } from '.';
import { checkPolicies } from './check';
import { policiesFields } from './fields';

/**
 * Request and response policies. IP rules and CORS run before authentication (a refused address
 * costs nothing more, and preflights need no credentials); the others just before the relay, once
 * the consumer is known.
 */
export const policiesPlugin: PluginDescriptor<typeof policiesFields.top, typeof policiesFields.route> = {
  name: 'policies',
  schema: policiesFields,
  check: checkPolicies,
  create: (ctx) => ({
    access: [ipRulesPlugin(ctx), corsPlugin(ctx)],
    forward: [headerRulesPlugin(), envelopePlugin(), deprecationPlugin(), bodyLimitPlugin(ctx)],
  }),
};

