import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext, type SecureContext, type TLSSocket } from 'node:tls';
import type { ServerOptions } from 'node:https';
import { ConfigError, type ConfigProblem } from '../config/problem';
import type { GatewayConfig } from '../config/schema';

export type ListenTlsConfig = NonNullable<GatewayConfig['listen']['tls']>;

/**
 * ALPN protocols offered by the TLS listener: h2 only when it serves HTTP/2 (listen.tls.http2), as
 * offering h2 without serving it would make h2-preferring clients fail. The server's preference
 * order wins, so a client offering both gets h2.
 */
export function alpnProtocols(http2: boolean): string[] {
  return http2 ? ['h2', 'http/1.1'] : ['http/1.1'];
}

/** The verified client certificate of a request on the TLS listener (mTLS at the edge). */
export interface ClientCertificate {
  /** Subject as an RFC 2253-like string (CN=client,O=Example). */
  subject: string;
  /** subjectAltName entries as Node writes them (DNS:a.example.com, URI:spiffe://..., email:...). */
  subjectAltName: string[];
  fingerprint256: string;
  serialNumber: string;
}

/** The client certificate of `socket` when the handshake verified it against the configured CA; null otherwise. */
export function verifiedClientCertificate(socket: unknown): ClientCertificate | null {
  const s = socket as TLSSocket;
  if (s.encrypted !== true || !s.authorized) return null;
  const cert = s.getPeerCertificate();
  if (!cert || !cert.subject) return null;
  return {
    subject: Object.entries(cert.subject)
      .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('+') : v}`)
      .join(','),
    subjectAltName: cert.subjectaltname ? cert.subjectaltname.split(', ') : [],
    fingerprint256: cert.fingerprint256,
    serialNumber: cert.serialNumber,
  };
}

/** A file read for a config field, or a problem naming both the field and the file. */
function readAt(path: string, file: string, problems: ConfigProblem[]): Buffer | null {
  try {
    return readFileSync(file);
  } catch (err) {
    problems.push({ path, message: `cannot read ${file}: ${(err as Error).message}` });
    return null;
  }
}

/** DNS names of a certificate's subjectAltName (the names it is valid for). */
function dnsNames(pem: Buffer): string[] {
  const san = new X509Certificate(pem).subjectAltName ?? '';
  return san
    .split(', ')
    .filter((e) => e.startsWith('DNS:'))
    .map((e) => e.slice(4).toLowerCase());
}

/** One loaded version of the listener's certificates: the secure contexts and how SNI picks them. */
interface Loaded {
  /** The file contents it was built from, to tell whether a reload changed anything. */
  fingerprint: string;
  defaultOptions: { key: Buffer; cert: Buffer; ca?: Buffer; minVersion: ListenTlsConfig['minVersion'] };
  exact: Map<string, SecureContext>;
  /** Contexts of *.example.com certificates, keyed by example.com. */
  wildcard: Map<string, SecureContext>;
  fallback: SecureContext;
}

/**
 * Reads the certificate, key and client CA files of listen.tls and builds one secure context per
 * certificate. Every problem names the config field and the file, so a bad rotation says what to fix.
 */
function load(cfg: ListenTlsConfig): Loaded {
  const problems: ConfigProblem[] = [];
  const at = 'listen.tls';
  const ca = cfg.clientCertificates.caFile ? readAt(`${at}.clientCertificates.caFile`, cfg.clientCertificates.caFile, problems) : null;
  const exact = new Map<string, SecureContext>();
  const wildcard = new Map<string, SecureContext>();
  const parts: string[] = [];
  let first: Loaded['defaultOptions'] | null = null;
  let fallback: SecureContext | null = null;
  cfg.certificates.forEach((c, i) => {
    const path = `${at}.certificates[${i}]`;
    const cert = readAt(`${path}.certFile`, c.certFile, problems);
    const key = readAt(`${path}.keyFile`, c.keyFile, problems);
    if (!cert || !key) return;
    const options = { key, cert, minVersion: cfg.minVersion, ...(ca ? { ca } : {}) };
    let context: SecureContext;
    let names: string[];
    try {
      names = c.serverNames?.map((n) => n.toLowerCase()) ?? dnsNames(cert);
    } catch (err) {
      problems.push({ path: `${path}.certFile`, message: `${c.certFile} is not a PEM certificate: ${(err as Error).message}` });
      return;
    }
    try {
      context = createSecureContext(options);
    } catch (err) {
      problems.push({ path, message: `${c.certFile} / ${c.keyFile}: ${(err as Error).message}` });
      return;
    }
    parts.push(cert.toString('base64'), key.toString('base64'));
    first ??= options;
    fallback ??= context;
    for (const name of names) {
      if (name.startsWith('*.')) {
        if (!wildcard.has(name.slice(2))) wildcard.set(name.slice(2), context);
      } else if (!exact.has(name)) exact.set(name, context);
    }
  });
  if (problems.length > 0 || !first || !fallback) throw new ConfigError('', problems);
  if (ca) parts.push(ca.toString('base64'));
  return { fingerprint: `${cfg.minVersion}|${parts.join('|')}`, defaultOptions: first, exact, wildcard, fallback };
}

/**
 * The TLS listener's certificates, swappable while the server runs: SNI picks a context from the
 * current version on every handshake, and the default context (no SNI, or no matching name) is
 * replaced through setSecureContext. Connections already open keep the certificate they shook
 * hands with.
 */
export class ListenerCertificates {
  private current: Loaded;
  private server: { setSecureContext(options: object): void } | null = null;

  /** Throws ConfigError naming the field and file when a file is missing or unusable. */
  constructor(private readonly cfg: ListenTlsConfig) {
    this.current = load(cfg);
  }

  /** The https server options: default certificate, SNI selection, versions, ALPN and client certificates. */
  serverOptions(http2: boolean): ServerOptions {
    const mode = this.cfg.clientCertificates.mode;
    return {
      ...this.current.defaultOptions,
      SNICallback: (name, cb) => cb(null, this.contextFor(name)),
      ALPNProtocols: alpnProtocols(http2),
      requestCert: mode !== 'off',
      rejectUnauthorized: mode === 'require',
    };
  }

  /** The server whose default context reloads replace. */
  attach(server: { setSecureContext(options: object): void }): void {
    this.server = server;
  }

  /** Exact name first, then the wildcard one label up, then the default certificate. */
  private contextFor(servername: string): SecureContext {
    const name = servername.toLowerCase();
    const loaded = this.current;
    const exact = loaded.exact.get(name);
    if (exact) return exact;
    const dot = name.indexOf('.');
    return (dot > 0 ? loaded.wildcard.get(name.slice(dot + 1)) : undefined) ?? loaded.fallback;
  }

  /**
   * Reads the files of `cfg` (same or new paths) without touching what serves. Throws ConfigError
   * on a bad file; the returned commit swaps the new certificates in (a no-op when nothing changed).
   */
  prepare(cfg: ListenTlsConfig): { changed: boolean; commit(): void } {
    const next = load(cfg);
    const changed = next.fingerprint !== this.current.fingerprint;
    return {
      changed,
      commit: () => {
        if (!changed) return;
        this.current = next;
        this.server?.setSecureContext(next.defaultOptions);
      },
    };
  }
}

/** The files of the TLS configuration (listener and upstreams), for watching them for rotation. */
export function tlsFiles(cfg: Readonly<GatewayConfig>): string[] {
  const files = new Set<string>();
  const tls = cfg.listen.tls;
  if (tls) {
    for (const c of tls.certificates) files.add(c.certFile).add(c.keyFile);
    if (tls.clientCertificates.caFile) files.add(tls.clientCertificates.caFile);
  }
  for (const up of Object.values(cfg.upstreams)) {
    for (const f of [up.tls.caFile, up.tls.certFile, up.tls.keyFile]) if (f) files.add(f);
  }
  return [...files];
}

/** Cross-field and file checks of the TLS settings, run when a configuration is loaded. */
export function checkTls(cfg: GatewayConfig, problems: ConfigProblem[]): void {
  const tls = cfg.listen.tls;
  const h2c = cfg.listen.h2c;
  if (h2c && h2c.port !== 0) {
    if (cfg.listen.plain && h2c.port === cfg.listen.port) problems.push({ path: 'listen.h2c.port', message: `must differ from listen.port (${cfg.listen.port})` });
    else if (tls && h2c.port === tls.port) problems.push({ path: 'listen.h2c.port', message: `must differ from listen.tls.port (${tls.port})` });
  }
  if (!cfg.listen.plain && !tls) problems.push({ path: 'listen.plain', message: 'the plain listener may only be turned off when listen.tls is set' });
  if (tls) {
    if (cfg.listen.plain && tls.port !== 0 && tls.port === cfg.listen.port) {
      problems.push({ path: 'listen.tls.port', message: `must differ from listen.port (${cfg.listen.port})` });
    }
    if (tls.clientCertificates.mode !== 'off' && !tls.clientCertificates.caFile) {
      problems.push({ path: 'listen.tls.clientCertificates.caFile', message: `is required when mode is ${tls.clientCertificates.mode}` });
    }
    try {
      load(tls);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problems.push(...err.problems);
    }
  }
  for (const [name, up] of Object.entries(cfg.upstreams)) {
    const at = `upstreams.${name}.tls`;
    const { certFile, keyFile } = up.tls;
    if (!certFile !== !keyFile) {
      problems.push({ path: certFile ? `${at}.keyFile` : `${at}.certFile`, message: `is required with ${certFile ? 'certFile' : 'keyFile'}` });
      continue;
    }
    if (!certFile || !keyFile) continue;
    const cert = readAt(`${at}.certFile`, certFile, problems);
    const key = readAt(`${at}.keyFile`, keyFile, problems);
    if (!cert || !key) continue;
    try {
      createSecureContext({ cert, key });
      // An upstream refuses an expired client certificate after the TLS 1.3 handshake, which the
      // relay can only see as a closed connection: refuse it here, where the file can be named.
      const validTo = new X509Certificate(cert).validTo;
      if (Date.parse(validTo) < Date.now()) problems.push({ path: `${at}.certFile`, message: `${certFile} expired on ${validTo}` });
    } catch (err) {
      problems.push({ path: at, message: `${certFile} / ${keyFile}: ${(err as Error).message}` });
    }
  }
}
