import { PLUGINS } from '../plugins';
import type { ConfigProblem } from './problem';
import type { GatewayConfig } from './schema';

/**
 * What a valid configuration does that is likely not what was meant. `gateway validate` prints these
 * and a gateway logs them (level warn) whenever it loads a configuration; they never stop it. Each
 * plugin with traps of its own says so in its descriptor's `warnings`.
 */
export function configWarnings(cfg: Readonly<GatewayConfig>): ConfigProblem[] {
  return PLUGINS.flatMap((p) => ('warnings' in p && p.warnings ? p.warnings(cfg) : []));
}
