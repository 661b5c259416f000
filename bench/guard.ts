import { readFileSync } from 'node:fs';

/** The ratios a scenario must reach (its req/s median divided by the baseline's, measured in the same run). */
export interface Floor {
  /** Minimum ratio to the reference (@fastify/http-proxy). */
  vsReference?: number;
  /** Minimum ratio to the bare gateway route. */
  vsBare?: number;
  /** Non-2xx answers are expected (a scenario that rejects on purpose); errors still fail. */
  allowNon2xx?: boolean;
}

export interface FloorsFile {
  /** How the floors were derived; kept with them so nobody has to guess. */
  note: string;
  floors: Record<string, Floor>;
}

/** What the check needs of a scenario's summary. */
export interface RatioSummary {
  name: string;
  vsReference: number | null;
  vsBare: number | null;
  errors: number;
  non2xx: number;
}

export interface Verdict {
  scenario: string;
  metric: 'vsReference' | 'vsBare' | 'errors' | 'non2xx' | 'missing';
  value: number | null;
  floor: number | null;
  ok: boolean;
  message: string;
}

const METRICS = ['vsReference', 'vsBare'] as const;

export function readFloors(file: string): FloorsFile {
  const parsed = JSON.parse(readFileSync(file, 'utf8')) as Partial<FloorsFile>;
  if (typeof parsed.note !== 'string' || !parsed.floors || typeof parsed.floors !== 'object') {
    throw new Error(`${file}: expected { "note": "...", "floors": { "<scenario>": { "vsReference"?: n, "vsBare"?: n } } }`);
  }
  for (const [name, f] of Object.entries(parsed.floors)) {
    for (const [k, v] of Object.entries(f)) {
      if (k === 'allowNon2xx' ? typeof v !== 'boolean' : !(METRICS as readonly string[]).includes(k) || typeof v !== 'number' || !(v > 0)) {
        throw new Error(`${file}: floors.${name}.${k} is not a known floor (vsReference, vsBare: positive numbers; allowNon2xx: boolean)`);
      }
    }
  }
  return parsed as FloorsFile;
}

/**
 * Compares a run with the floors. Every scenario that ran must answer without errors (and with 2xx
 * unless its floor allows otherwise); ratio floors apply where set. Scenarios left out of the run
 * (--only) are skipped; a floor naming a scenario that does not exist at all fails, so a renamed
 * scenario cannot silently lose its guard.
 */
export function checkFloors(floors: FloorsFile, summary: RatioSummary[], known: string[], ran: string[]): Verdict[] {
  const out: Verdict[] = [];
  for (const scenario of Object.keys(floors.floors)) {
    if (!known.includes(scenario)) {
      out.push({ scenario, metric: 'missing', value: null, floor: null, ok: false, message: `${scenario}: floor set for a scenario that does not exist` });
    }
  }
  for (const scenario of ran) {
    const floor: Floor = floors.floors[scenario] ?? {};
    const s = summary.find((x) => x.name === scenario);
    if (!s) throw new Error(`scenario ${scenario} ran but has no summary`);
    for (const metric of METRICS) {
      const min = floor[metric];
      if (min === undefined) continue;
      const value = s[metric];
      const ok = value !== null && value >= min;
      out.push({
        scenario,
        metric,
        value,
        floor: min,
        ok,
        message: `${scenario} ${metric} ${value === null ? 'not measured' : value.toFixed(2)} ${ok ? '≥' : '<'} floor ${min.toFixed(2)}`,
      });
    }
    // A fast answer is worthless if it is an error: failures never pass the guard.
    out.push({ scenario, metric: 'errors', value: s.errors, floor: 0, ok: s.errors === 0, message: `${scenario} errors ${s.errors}` });
    if (!floor.allowNon2xx) {
      out.push({ scenario, metric: 'non2xx', value: s.non2xx, floor: 0, ok: s.non2xx === 0, message: `${scenario} non-2xx ${s.non2xx}` });
    }
  }
  return out;
}
