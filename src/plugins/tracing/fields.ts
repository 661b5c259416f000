import { RouteTracingSchema, TracingSchema } from './schema';

/** The configuration fields of the tracing plugin: `tracing` at the top level and in a route. */
export const tracingFields = { top: { tracing: TracingSchema }, route: { tracing: RouteTracingSchema } };
