import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Issued {
  certFile: string;
  keyFile: string;
  cert: Buffer;
  key: Buffer;
  /** Serial number in upper-case hex, as Node's getPeerCertificate() reports it. */
  serial: string;
}

export interface TestCa {
  dir: string;
  caFile: string;
  ca: Buffer;
  /**
   * Issues a certificate signed by this CA (EC P-256, fast to make). `days` below 0 makes one that
   * has already expired. `serverAuth` false makes a client certificate.
   */
  issue(name: string, opts: { cn?: string; dns?: string[]; days?: number; serial?: number; client?: boolean }): Issued;
}

let serials = 1000;

function evenHex(n: number): string {
  const hex = n.toString(16).toUpperCase();
  return hex.length % 2 ? `0${hex}` : hex;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('/usr/bin/openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A certificate authority in a fresh temporary directory, made with the openssl CLI. */
export function makeCa(cn = 'Gateway Test CA', dir = mkdtempSync(join(tmpdir(), 'gw-tls-'))): TestCa {
  const prefix = cn.replace(/\W+/g, '-');
  openssl(
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${prefix}.key`, '-out', `${prefix}.pem`, '-subj', `/CN=${cn}`, '-days', '30'],
    dir,
  );
  const caFile = join(dir, `${prefix}.pem`);
  return {
    dir,
    caFile,
    ca: readFileSync(caFile),
    issue(name, opts) {
      const serial = opts.serial ?? serials++;
      const ext = [
        opts.client ? 'extendedKeyUsage=clientAuth' : 'extendedKeyUsage=serverAuth',
        ...(opts.dns?.length ? [`subjectAltName=${opts.dns.map((d) => `DNS:${d}`).join(',')}`] : []),
      ];
      writeFileSync(join(dir, `${name}.ext`), `${ext.join('\n')}\n`);
      openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${opts.cn ?? name}`], dir);
      openssl(
        ['x509', '-req', '-in', `${name}.csr`, '-CA', `${prefix}.pem`, '-CAkey', `${prefix}.key`, '-set_serial', String(serial), '-days', String(opts.days ?? 30), '-extfile', `${name}.ext`, '-out', `${name}.pem`],
        dir,
      );
      const certFile = join(dir, `${name}.pem`);
      const keyFile = join(dir, `${name}.key`);
      return { certFile, keyFile, cert: readFileSync(certFile), key: readFileSync(keyFile), serial: evenHex(serial) };
    },
  };
}
