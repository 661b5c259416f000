import { randomFillSync } from 'node:crypto';

/** What a client may send as its own X-Request-Id (anything else is replaced). */
const SANE_REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/;
/** Ids made per batch. */
const BATCH = 128;
const HEX = Buffer.from('0123456789abcdef', 'latin1');
/** Where the two hex digits of each of the 16 bytes go in the 36 characters of a UUID. */
const AT = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

/**
 * Request ids: the client's own when it is a sane token, otherwise a random UUID (version 4). The
 * UUIDs are made a batch at a time into one string, and each request takes a slice of it (V8 shares
 * the characters): Node's randomUUID joins some twenty pieces per id, and that joined id was copied
 * flat again when first written into a header.
 */
export class RequestIds {
  private readonly random = Buffer.alloc(16 * BATCH);
  private readonly text = Buffer.alloc(36 * BATCH);
  private batch = '';
  private next = BATCH;

  constructor() {
    // The dashes never move: written once.
    for (let o = 0; o < 36 * BATCH; o += 36) this.text[o + 8] = this.text[o + 13] = this.text[o + 18] = this.text[o + 23] = 0x2d;
  }

  /** The id of a request that arrived with `incoming` as its X-Request-Id. */
  readonly for = (incoming: string | string[] | undefined): string =>
    typeof incoming === 'string' && SANE_REQUEST_ID.test(incoming) ? incoming : this.generate();

  generate(): string {
    if (this.next === BATCH) this.refill();
    const at = this.next++ * 36;
    return this.batch.slice(at, at + 36);
  }

  private refill(): void {
    const r = this.random;
    const t = this.text;
    randomFillSync(r);
    for (let i = 0, o = 0; i < 16 * BATCH; i += 16, o += 36) {
      r[i + 6] = (r[i + 6] & 0x0f) | 0x40; // version 4
      r[i + 8] = (r[i + 8] & 0x3f) | 0x80; // variant 10xx (RFC 9562)
      for (let j = 0; j < 16; j++) {
        const b = r[i + j];
        const at = o + AT[j];
        t[at] = HEX[b >> 4];
        t[at + 1] = HEX[b & 15];
      }
    }
    this.batch = t.toString('latin1');
    this.next = 0;
  }
}
