import type { PluginDescriptor } from '../types';
import { tracingFields } from './fields';

/**
 * OpenTelemetry tracing. Its step comes first on every route while tracing is on, so the server
 * span covers the other steps; with tracing off no route has it and nothing runs per request.
 * The tracer provider and its export queue live as long as the gateway (a reload keeps them).
 */
export const tracingPlugin: PluginDescriptor<typeof tracingFields.top, typeof tracingFields.route> = {
  name: 'tracing',
  schema: tracingFields,
  create: (ctx) => {
    const cfg = ctx.config.tracing;
    if (!cfg.enabled) return {};
    const tracing = ctx.shared('tracing', () => {
      // The SDK and the exporter (protobuf included) are loaded only when tracing is on: they add
      // about 100 ms of CPU to a start-up that would not use them.
      const { Tracing } = require('../../observability/tracing') as typeof import('../../observability/tracing');
      const t = new Tracing(cfg, ctx.metrics);
      ctx.addResource(t);
      return t;
    });
    return { access: [{ name: 'tracing', stepFor: (route) => tracing.stepFor(route, cfg.sampleRatio) }] };
  },
};
