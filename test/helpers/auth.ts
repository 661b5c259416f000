import { connect } from 'node:net';
import { SignJWT, type JWTPayload, type JWTHeaderParameters, type CryptoKey, type KeyObject } from 'jose';

/** Test tokens are minted with jose, never with the code under test. */
export async function mint(
  claims: JWTPayload,
  key: Uint8Array | CryptoKey | KeyObject,
  header: Partial<JWTHeaderParameters> & { alg: string } = { alg: 'HS256' },
  crit?: Record<string, boolean>,
): Promise<string> {
  return new SignJWT(claims).setProtectedHeader(header as JWTHeaderParameters).sign(key, crit ? { crit } : undefined);
}

export const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

export const now = (): number => Math.floor(Date.now() / 1000);

export const b64url = (v: unknown): string => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

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
