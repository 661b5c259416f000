import { BlockList, isIP } from 'node:net';

/**
 * Resolves the client address. The socket peer is the client unless it is a trusted proxy; then
 * X-Forwarded-For is walked right to left to the first untrusted address, so a client can never
 * choose its own address by sending a forged header.
 */
export class ClientIpResolver {
  private readonly trusted: BlockList | null;

  constructor(cidrs: readonly string[]) {
    if (cidrs.length === 0) {
      this.trusted = null;
      return;
    }
    this.trusted = new BlockList();
    for (const entry of cidrs) {
      const [addr, bits] = entry.split('/');
      const family = isIP(addr) === 4 ? 'ipv4' : 'ipv6';
      this.trusted.addSubnet(addr, bits === undefined ? (family === 'ipv4' ? 32 : 128) : Number(bits), family);
    }
  }

  isTrusted(addr: string | undefined): boolean {
    if (this.trusted === null || !addr) return false;
    const family = isIP(addr);
    return family !== 0 && this.trusted.check(addr, family === 4 ? 'ipv4' : 'ipv6');
  }

  resolve(peer: string | undefined, xff: string | string[] | undefined): string {
    const socketAddr = peer ?? '';
    if (this.trusted === null || xff === undefined || !this.isTrusted(socketAddr)) return socketAddr;
    const hops = (Array.isArray(xff) ? xff.join(',') : xff).split(',');
    let client = socketAddr;
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = hops[i].trim();
      if (isIP(hop) === 0) break;
      client = hop;
      if (!this.isTrusted(hop)) break;
    }
    return client;
  }
}
