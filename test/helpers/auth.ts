import { createHash, randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { CompactSign, SignJWT, type JWTPayload, type JWTHeaderParameters, type CryptoKey, type KeyObject } from 'jose';

/** Test tokens are minted with jose, never with the code under test. */
export async function mint(
  claims: JWTPayload,
  key: Uint8Array | CryptoKey | KeyObject,
  header: Partial<JWTHeaderParameters> & { alg: string } = { alg: 'HS256' },
  crit?: Record<string, boolean>,
): Promise<string> {
  return new SignJWT(claims).setProtectedHeader(header as JWTHeaderParameters).sign(key, crit ? { crit } : undefined);
}

/**
 * Signs a payload given as JSON text, for values JSON.stringify cannot write (such as 1e400, which
 * a JSON parser reads as Infinity).
 */
export async function mintRaw(payloadJson: string, key: Uint8Array, header: Record<string, unknown> = { alg: 'HS256' }): Promise<string> {
  return new CompactSign(bytes(payloadJson)).setProtectedHeader(header as JWTHeaderParameters).sign(key);
}

export const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

export const now = (): number => Math.floor(Date.now() / 1000);

export const b64url = (v: unknown): string => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** A key in the gateway's format, made here (not by the code under test), with its SHA-256. */
export function makeKey(): { key: string; prefix: string; sha256: string } {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  const prefix = 'gk_' + Array.from(randomBytes(8), (b) => alphabet[b & 31]).join('');
  const key = `${prefix}_${randomBytes(32).toString('base64url')}`;
  return { key, prefix, sha256: createHash('sha256').update(key).digest('hex') };
}

/** Values of every header whose name folds to `name` (any case, "_" for "-"), in arrival order. */
export function headerValues(rawHeaders: string[], name: string): string[] {
  const want = name.toLowerCase().replace(/_/g, '-');
  const out: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i].toLowerCase().replace(/_/g, '-') === want) out.push(rawHeaders[i + 1]);
  }
  return out;
}

/** Sends raw bytes over a fresh connection and returns everything the server answered. */
export function rawExchange(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.write(text));
    let out = '';
    s.setTimeout(5000, () => s.destroy(new Error('raw exchange timed out')));
    s.on('data', (d: Buffer) => (out += d.toString('latin1')));
    s.on('error', reject);
    s.on('close', () => resolve(out));
  });
}
