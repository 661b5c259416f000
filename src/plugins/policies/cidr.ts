/**
 * A set of IPv4 and IPv6 ranges matched in plain JavaScript. Node's BlockList builds a native
 * SocketAddress for every check, which costs microseconds per request; parsing the address here
 * costs a fraction of that. Semantics follow BlockList: IPv4 lives in the IPv6 space as
 * ::ffff:a.b.c.d, so 10.0.0.0/8 matches ::ffff:10.1.2.3 (a dual-stack peer) and ::/0 matches every
 * address.
 */

/** The value of a dotted quad in ip[start, end), or -1 when it is not one. */
function parseV4(ip: string, start: number, end: number): number {
  let value = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = start; i < end; i++) {
    const c = ip.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || ++dots > 3) return -1;
      value = value * 256 + part;
      part = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      part = part * 10 + (c - 48);
      if (++digits > 3 || part > 255) return -1;
    } else {
      return -1;
    }
  }
  if (dots !== 3 || digits === 0) return -1;
  return value * 256 + part;
}

function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

/** Word masks of a prefix length, most significant word first. */
function masks(prefix: number, words: number): number[] {
  const out: number[] = [];
  for (let k = 0; k < words; k++) {
    const bits = Math.max(0, Math.min(32, prefix - 32 * k));
    out.push(bits === 0 ? 0 : bits === 32 ? 0xffffffff : (0xffffffff << (32 - bits)) >>> 0);
  }
  return out;
}

export class CidrSet {
  /** Ranges as 4 network words then 4 mask words, IPv4 ones mapped. */
  private readonly ranges: number[] = [];
  /** Scratch space of one parse (checks are synchronous, so one is enough). */
  private readonly groups = new Uint16Array(8);
  private readonly words = new Uint32Array(4);

  /** Adds a range; the address must be valid (checked at config load). */
  add(address: string, prefix: number): void {
    const v4 = !address.includes(':');
    if (!this.parse(address)) throw new Error(`not an IP address: ${address}`);
    const m = masks(v4 ? 96 + prefix : prefix, 4);
    for (let k = 0; k < 4; k++) this.ranges.push((this.words[k] & m[k]) >>> 0);
    this.ranges.push(...m);
  }

  has(ip: string): boolean {
    if (!this.parse(ip)) return false;
    const w = this.words;
    const r = this.ranges;
    for (let i = 0; i < r.length; i += 8) {
      if (
        ((w[0] & r[i + 4]) >>> 0) === r[i] &&
        ((w[1] & r[i + 5]) >>> 0) === r[i + 1] &&
        ((w[2] & r[i + 6]) >>> 0) === r[i + 2] &&
        ((w[3] & r[i + 7]) >>> 0) === r[i + 3]
      ) {
        return true;
      }
    }
    return false;
  }

  /** Parses an address into `this.words`, IPv4 as ::ffff:a.b.c.d. */
  private parse(ip: string): boolean {
    if (ip.includes(':')) return this.parseV6(ip);
    const v = parseV4(ip, 0, ip.length);
    if (v < 0) return false;
    const w = this.words;
    w[0] = 0;
    w[1] = 0;
    w[2] = 0xffff;
    w[3] = v;
    return true;
  }

  /** Parses an IPv6 address (with ::, an embedded dotted quad, a %zone) into `this.words`. */
  private parseV6(ip: string): boolean {
    const g = this.groups;
    const pct = ip.indexOf('%');
    const end = pct < 0 ? ip.length : pct;
    let n = 0;
    let gap = -1;
    let i = 0;
    if (end >= 2 && ip.charCodeAt(0) === 58 && ip.charCodeAt(1) === 58) {
      gap = 0;
      i = 2;
    }
    while (i < end) {
      let j = i;
      let value = 0;
      let dotted = false;
      for (; j < end; j++) {
        const c = ip.charCodeAt(j);
        if (c === 58) break;
        if (c === 46) dotted = true;
        else if (!dotted) {
          const d = hexDigit(c);
          if (d < 0) return false;
          value = value * 16 + d;
        }
      }
      if (dotted) {
        if (j !== end || n > 6) return false;
        const v4 = parseV4(ip, i, j);
        if (v4 < 0) return false;
        g[n++] = v4 >>> 16;
        g[n++] = v4 & 0xffff;
        break;
      }
      if (j === i || j - i > 4 || n === 8) return false;
      g[n++] = value;
      if (j === end) break;
      if (ip.charCodeAt(j + 1) === 58) {
        if (gap >= 0) return false;
        gap = n;
        i = j + 2;
      } else {
        i = j + 1;
        if (i === end) return false;
      }
    }
    if (gap < 0) {
      if (n !== 8) return false;
    } else {
      if (n > 7) return false;
      const shift = 8 - n;
      for (let k = n - 1; k >= gap; k--) g[k + shift] = g[k];
      for (let k = gap; k < gap + shift; k++) g[k] = 0;
    }
    const w = this.words;
    for (let k = 0; k < 4; k++) w[k] = ((g[2 * k] << 16) | g[2 * k + 1]) >>> 0;
    return true;
  }
}
