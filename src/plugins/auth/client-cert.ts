import type { TLSSocket } from 'node:tls';
import type { CounterCell, CounterFamily } from '../../observability/fast-metrics';
import type { ConsumerDirectory, Verified } from './consumers';
import { AuthFailure } from './failure';
import { identityHeaderPairs, isHeaderValue, UnsendableIdentityError, type IdentityHeaderNames } from './identity-headers';
import type { ClientCertConfig } from './schema';

type CertResult = 'ok' | 'unverified' | 'no_identity' | 'unknown_consumer' | 'unsendable';
const RESULTS: readonly CertResult[] = ['ok', 'unverified', 'no_identity', 'unknown_consumer', 'unsendable'];

/** The subjectAltName prefix Node writes for each SAN kind the consumer can be taken from. */
const SAN_PREFIX: Record<string, string> = { 'san.dns': 'DNS:', 'san.uri': 'URI:', 'san.email': 'email:' };

/**
 * A SAN value as Node writes it: plain, or a JSON string when it holds characters that could be
 * mistaken for separators (Node quotes those since the CVE-2021-44532 fix).
 */
function sanValue(raw: string): string | undefined {
  if (!raw.startsWith('"')) return raw;
  try {
    const v: unknown = JSON.parse(raw);
    return typeof v === 'string' ? v : undefined;
  } catch {
    return undefined;
  }
}

/** Splits a subjectAltName string at the ", " separators outside quoted values. */
function sanEntries(san: string): string[] {
  const out: string[] = [];
  let start = 0;
  let quoted = false;
  for (let i = 0; i < san.length; i++) {
    const ch = san[i];
    if (ch === '\\' && quoted) i++;
    else if (ch === '"') quoted = !quoted;
    else if (!quoted && ch === ',' && san[i + 1] === ' ') {
      out.push(san.slice(start, i));
      start = i + 2;
      i++;
    }
  }
  out.push(san.slice(start));
  return out;
}

/**
 * Client certificates as credentials (mTLS at the edge). The TLS listener verifies the chain
 * against listen.tls.clientCertificates.caFile; this turns a verified certificate into a consumer,
 * by subject CN or a SAN. The identity is remembered per connection: every request on it carries
 * the same certificate.
 */
export class ClientCertAuthenticator {
  private readonly byConnection = new WeakMap<object, Verified>();
  private readonly counts: Record<CertResult, CounterCell>;

  constructor(
    private readonly cfg: ClientCertConfig,
    private readonly consumers: ConsumerDirectory,
    private readonly names: IdentityHeaderNames,
    counter: CounterFamily,
  ) {
    this.counts = Object.fromEntries(RESULTS.map((r) => [r, counter.child(r)])) as Record<CertResult, CounterCell>;
  }

  /** Whether the client sent a certificate at all (verified or not): the credential is present. */
  presented(socket: object): boolean {
    const s = socket as TLSSocket;
    if (s.encrypted !== true) return false;
    if (this.byConnection.has(s)) return true;
    const cert = s.getPeerCertificate();
    return cert !== null && cert.subject !== undefined;
  }

  /** The identity the connection's certificate proves; throws AuthFailure with a precise code. */
  authenticate(socket: object): Verified {
    const hit = this.byConnection.get(socket);
    if (hit !== undefined) {
      this.counts.ok.inc();
      return hit;
    }
    const s = socket as TLSSocket;
    if (!s.authorized) {
      this.counts.unverified.inc();
      // authorizationError is OpenSSL's verdict (a fixed code such as UNABLE_TO_VERIFY_LEAF_SIGNATURE), nothing the client wrote.
      throw new AuthFailure(`the client certificate did not verify against the configured CA (${String(s.authorizationError)})`, false, false, 'CLIENT_CERT_INVALID');
    }
    const cert = s.getPeerCertificate();
    const id = this.nameOf(cert.subject as unknown as Record<string, string | string[]> | undefined, cert.subjectaltname);
    if (id === undefined) {
      this.counts.no_identity.inc();
      throw new AuthFailure(`the client certificate has no ${this.cfg.consumerFrom} to identify the caller`, false, false, 'CLIENT_CERT_NO_IDENTITY');
    }
    const known = this.consumers.get(id);
    if (known === undefined && this.cfg.requireKnownConsumer) {
      this.counts.unknown_consumer.inc();
      throw new AuthFailure('the client certificate names no known consumer', false, false, 'CLIENT_CERT_UNKNOWN_CONSUMER');
    }
    const roles = known ? known.config.roles : [];
    const extra: [string, string][] = [];
    if (this.cfg.forward) {
      const subject = Object.entries(cert.subject ?? {})
        .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('+') : v}`)
        .join(',');
      if (isHeaderValue(subject, this.names.maxLength)) extra.push([this.cfg.subjectHeader, subject]);
      extra.push([this.cfg.fingerprintHeader, cert.fingerprint256]);
    }
    let headers: [string, string][];
    try {
      headers = identityHeaderPairs(this.names, id, undefined, roles, extra);
    } catch (err) {
      if (!(err instanceof UnsendableIdentityError)) throw err;
      this.counts.unsendable.inc();
      throw new AuthFailure(`the client certificate identity cannot be forwarded: ${err.message}`, false, false, 'CLIENT_CERT_NO_IDENTITY');
    }
    const verified: Verified = {
      identity: { consumerId: id, roles, scopes: known ? known.config.scopes : [], method: 'clientCert', headers },
      routes: known ? known.routes : null,
    };
    this.byConnection.set(socket, verified);
    this.counts.ok.inc();
    return verified;
  }

  private nameOf(subject: Record<string, string | string[]> | undefined, san: string | undefined): string | undefined {
    const from = this.cfg.consumerFrom;
    if (from === 'subject.CN') {
      const cn = subject?.CN;
      // Several CNs: which one names the caller is anyone's guess.
      return typeof cn === 'string' && cn !== '' ? cn : undefined;
    }
    if (san === undefined) return undefined;
    const prefix = SAN_PREFIX[from];
    for (const entry of sanEntries(san)) {
      if (entry.startsWith(prefix)) {
        const v = sanValue(entry.slice(prefix.length));
        if (v !== undefined && v !== '') return v;
      }
    }
    return undefined;
  }
}
