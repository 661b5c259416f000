import { randomBytes } from 'node:crypto';

/**
 * A WebSocket close frame (RFC 6455 §5.5.1) carrying only a status code: FIN + opcode 0x8, a
 * 2-byte payload. Frames a client sends must be masked (§5.3), so the one the gateway sends the
 * upstream (where it acts as the client) is; the one it sends the client is not.
 */
export function closeFrame(code: number, masked: boolean): Buffer {
  if (!masked) return Buffer.from([0x88, 0x02, code >> 8, code & 0xff]);
  const key = randomBytes(4);
  return Buffer.from([0x88, 0x82, key[0], key[1], key[2], key[3], (code >> 8) ^ key[0], (code & 0xff) ^ key[1]]);
}

/** 1001 Going Away: the gateway is shutting down, or the connection outlived its limits. */
export const GOING_AWAY = 1001;
