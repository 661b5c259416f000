import { cacheWarnings } from '../plugins/cache/check';
import type { ConfigProblem } from './load';
import type { GatewayConfig } from './schema';

/**
 * What a valid configuration does that is likely not what was meant. `gateway validate` prints these
 * and a gateway logs them (level warn) whenever it loads a configuration; they never stop it.
 * A capability with traps of its own adds its function here.
 */
const WARNINGS: readonly ((cfg: Readonly<GatewayConfig>) => ConfigProblem[])[] = [cacheWarnings];

export function configWarnings(cfg: Readonly<GatewayConfig>): ConfigProblem[] {
  return WARNINGS.flatMap((w) => w(cfg));
}
