import { createSocket } from 'node:dgram';
import type { AddressInfo } from 'node:net';
import * as dnsPacket from 'dns-packet';

export interface SrvAnswer {
  target: string;
  port: number;
  weight?: number;
  priority?: number;
}

/** What the server answers for one name; change it while the server runs. */
export interface Zone {
  a?: string[];
  aaaa?: string[];
  srv?: SrvAnswer[];
  ttl?: number;
}

export interface TestDnsServer {
  /** 127.0.0.1:port, for discovery.servers. */
  readonly address: string;
  /** Answers by name (lower case, no trailing dot). A name absent is NXDOMAIN. */
  readonly zones: Map<string, Zone>;
  /** Answer SERVFAIL to everything (a DNS outage). */
  failing: boolean;
  /** Queries received, by name. */
  readonly queries: Map<string, number>;
  close(): Promise<void>;
}

/** A small authoritative DNS server over UDP on a free port (dns-packet), whose answers tests change. */
export async function startDnsServer(): Promise<TestDnsServer> {
  const socket = createSocket('udp4');
  const server: TestDnsServer = {
    address: '',
    zones: new Map(),
    failing: false,
    queries: new Map(),
    close: () => new Promise((resolve) => socket.close(() => resolve())),
  };
  socket.on('message', (msg, peer) => {
    let query: dnsPacket.Packet;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return;
    }
    const q = query.questions?.[0];
    if (!q) return;
    const name = q.name.toLowerCase().replace(/\.$/, '');
    server.queries.set(name, (server.queries.get(name) ?? 0) + 1);
    const zone = server.zones.get(name);
    const answers: dnsPacket.Answer[] = [];
    const ttl = zone?.ttl ?? 1;
    if (zone && q.type === 'A') for (const ip of zone.a ?? []) answers.push({ type: 'A', name: q.name, ttl, data: ip });
    if (zone && q.type === 'AAAA') for (const ip of zone.aaaa ?? []) answers.push({ type: 'AAAA', name: q.name, ttl, data: ip });
    if (zone && q.type === 'SRV') {
      for (const s of zone.srv ?? []) {
        answers.push({ type: 'SRV', name: q.name, ttl, data: { target: s.target, port: s.port, weight: s.weight ?? 1, priority: s.priority ?? 0 } });
      }
    }
    // dns-packet encodes the response code from the low bits of the flags: SERVFAIL 2, NXDOMAIN 3.
    const rcode = server.failing ? 2 : zone ? 0 : 3;
    const reply = dnsPacket.encode({
      type: 'response',
      id: query.id,
      flags: dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_DESIRED | rcode,
      questions: query.questions,
      answers: server.failing ? [] : answers,
    });
    socket.send(reply, peer.port, peer.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  (server as { address: string }).address = `127.0.0.1:${(socket.address() as AddressInfo).port}`;
  return server;
}
