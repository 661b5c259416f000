/** Field names whose values are secrets wherever they appear in the configuration. */
const SECRET_KEY = /(token|secret|password|passphrase|privatekey|apikey|hash|credentials?)$/i;
const REDACTED = '[redacted]';

/**
 * A copy of the configuration safe to show: secret-named fields are replaced, and passwords inside
 * URLs (redis://user:pass@host) are masked.
 */
export function redact(value: unknown, key = ''): unknown {
  if (typeof value === 'string') {
    if (SECRET_KEY.test(key)) return REDACTED;
    return value.replace(/^([a-z][a-z0-9+.-]*:\/\/)([^@/]*)@/i, (_m, scheme: string) => `${scheme}${REDACTED}@`);
  }
  if (Array.isArray(value)) return value.map((v) => redact(v, key));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = SECRET_KEY.test(k) && v !== null && typeof v !== 'object' ? REDACTED : redact(v, k);
    return out;
  }
  return value;
}
