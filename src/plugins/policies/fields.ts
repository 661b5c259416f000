import { PoliciesSchema, RoutePoliciesSchema } from './schema';

/** The configuration fields of the policies plugin: `policies` at the top level and in every route. */
export const policiesFields = { top: { policies: PoliciesSchema }, route: { policies: RoutePoliciesSchema } };
