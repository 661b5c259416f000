import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

/** Base64 or base64url text of exactly 32 bytes, or null. */
export function aesKey(text: string): Buffer | null {
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(text)) return null;
  const key = Buffer.from(text.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  return key.length === 32 ? key : null;
}

const VERSION = 1;
const KEY_ID_BYTES = 4;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const HEAD = 1 + KEY_ID_BYTES + IV_BYTES;

interface SealKey {
  id: Buffer;
  key: Buffer;
}

/**
 * Seals values with AES-256-GCM: version, key id, IV, ciphertext, tag, all base64url. The key id
 * (a hash prefix, never the key) picks the opening key directly, so rotation costs nothing: the
 * first key seals, every key opens. The cookie's name is authenticated too, so a value sealed as
 * one cookie (the login state) is refused as another (the session).
 */
export class CookieSealer {
  private readonly keys: SealKey[];

  constructor(keyTexts: readonly string[]) {
    this.keys = keyTexts.map((t) => {
      const key = aesKey(t);
      if (key === null) throw new Error('a session key is not 32 bytes of base64');
      return { key, id: createHash('sha256').update(key).digest().subarray(0, KEY_ID_BYTES) };
    });
  }

  seal(name: string, value: unknown): string {
    const k = this.keys[0];
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', k.key, iv);
    cipher.setAAD(Buffer.from(name));
    const body = Buffer.concat([cipher.update(JSON.stringify(value), 'utf8'), cipher.final()]);
    return Buffer.concat([Buffer.of(VERSION), k.id, iv, body, cipher.getAuthTag()]).toString('base64url');
  }

  /** The value sealed under `name`, or null for anything not sealed by one of the keys (tampered, truncated, foreign). */
  open(name: string, text: string): unknown {
    const raw = Buffer.from(text, 'base64url');
    if (raw.length < HEAD + TAG_BYTES || raw[0] !== VERSION) return null;
    const id = raw.subarray(1, 1 + KEY_ID_BYTES);
    const k = this.keys.find((c) => c.id.equals(id));
    if (k === undefined) return null;
    try {
      const decipher = createDecipheriv('aes-256-gcm', k.key, raw.subarray(1 + KEY_ID_BYTES, HEAD));
      decipher.setAAD(Buffer.from(name));
      decipher.setAuthTag(raw.subarray(raw.length - TAG_BYTES));
      const plain = Buffer.concat([decipher.update(raw.subarray(HEAD, raw.length - TAG_BYTES)), decipher.final()]);
      return JSON.parse(plain.toString('utf8'));
    } catch {
      return null;
    }
  }
}

/** Every cookie of a Cookie header, by name (the first of a repeated name wins, as browsers send the most specific first). */
export function parseCookies(header: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (header === undefined) return out;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    const name = part.slice(0, eq).trim();
    if (!out.has(name)) out.set(name, part.slice(eq + 1).trim());
  }
  return out;
}

/** Browsers keep at most 4096 bytes of name, value and attributes per cookie; this leaves room for the attributes. */
export const CHUNK_CHARS = 3800;

/** The chunk cookie names of a session: name, name.1, name.2, ... */
export function chunkName(name: string, i: number): string {
  return i === 0 ? name : `${name}.${i}`;
}

/** The session text split over its cookies, or null when there is none (a missing chunk ends it). */
export function readChunks(cookies: Map<string, string>, name: string, max: number): string | null {
  const first = cookies.get(name);
  if (first === undefined || first === '') return null;
  let text = first;
  for (let i = 1; i < max; i++) {
    const next = cookies.get(chunkName(name, i));
    if (next === undefined) break;
    text += next;
  }
  return text;
}
