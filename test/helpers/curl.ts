import { request } from 'node:http';

/**
 * Runs the curl command lines that the demo prints and the guides in docs/ show, so what a reader
 * pastes is what the tests run. It understands the subset those use: -i -s -S -N -o -w -X -H -d
 * --data(-binary|-raw) --max-time, `$VAR` and `"$VAR"` from earlier `NAME=value` lines, and the loop
 * `for i in $(seq N); do curl ...; done; echo`.
 */
export interface CurlRequest {
  method: string;
  url: URL;
  headers: [string, string][];
  body?: string;
  /** The loop's count (1 without a loop). */
  repeat: number;
  /** `-w '%{http_code} '`: the command prints statuses. */
  printsStatus: boolean;
}

export interface CurlResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** Every status when the command loops. */
  statuses: number[];
}

/** Splits a shell line into words: single quotes literal, double quotes expand $VAR, backslash escapes. */
export function shellWords(line: string, vars: Record<string, string>): string[] {
  const words: string[] = [];
  let word: string | null = null;
  const expand = (s: string, at: number): [string, number] => {
    const m = /^\$(\{(\w+)\}|(\w+))/.exec(s.slice(at));
    if (!m) return ['$', at + 1];
    const name = m[2] ?? m[3];
    if (!(name in vars)) throw new Error(`${name} is not set (set it with ${name}=... first)`);
    return [vars[name], at + m[0].length];
  };
  for (let i = 0; i < line.length; ) {
    const c = line[i];
    if (c === ' ' || c === '\t') {
      if (word !== null) words.push(word);
      word = null;
      i++;
    } else if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new Error(`unclosed ' in ${line}`);
      word = (word ?? '') + line.slice(i + 1, end);
      i = end + 1;
    } else if (c === '"') {
      word = word ?? '';
      i++;
      while (i < line.length && line[i] !== '"') {
        if (line[i] === '\\' && i + 1 < line.length) {
          word += line[i + 1];
          i += 2;
        } else if (line[i] === '$') {
          const [v, next] = expand(line, i);
          word += v;
          i = next;
        } else word += line[i++];
      }
      if (i >= line.length) throw new Error(`unclosed " in ${line}`);
      i++;
    } else if (c === '$' && line[i + 1] !== '(') {
      const [v, next] = expand(line, i);
      word = (word ?? '') + v;
      i = next;
    } else if (c === '\\' && i + 1 < line.length) {
      word = (word ?? '') + line[i + 1];
      i += 2;
    } else {
      word = (word ?? '') + c;
      i++;
    }
  }
  if (word !== null) words.push(word);
  return words;
}

const LOOP = /^for \w+ in \$\(seq (\d+)\); do (.+); done(; echo)?$/;

/** Parses one command line (a curl, or the loop around one). */
export function parseCurl(line: string, vars: Record<string, string> = {}): CurlRequest {
  let repeat = 1;
  const loop = LOOP.exec(line.trim());
  if (loop) {
    repeat = Number(loop[1]);
    line = loop[2];
  }
  const words = shellWords(line.trim(), vars);
  if (words[0] !== 'curl') throw new Error(`not a curl command: ${line}`);
  let method: string | undefined;
  let url: string | undefined;
  let body: string | undefined;
  let printsStatus = false;
  const headers: [string, string][] = [];
  for (let i = 1; i < words.length; i++) {
    const w = words[i];
    const next = (): string => {
      const v = words[++i];
      if (v === undefined) throw new Error(`${w} needs a value in ${line}`);
      return v;
    };
    if (/^-[isSNv]+$/.test(w)) continue;
    if (w === '-o' || w === '--max-time' || w === '-m') next();
    else if (w === '-w') printsStatus = next().includes('%{http_code}');
    else if (w === '-X' || w === '--request') method = next();
    else if (w === '-H' || w === '--header') {
      const h = next();
      const colon = h.indexOf(':');
      if (colon < 1) throw new Error(`bad header ${h}`);
      headers.push([h.slice(0, colon).trim(), h.slice(colon + 1).trim()]);
    } else if (w === '-d' || w === '--data' || w === '--data-binary' || w === '--data-raw') body = next();
    else if (w.startsWith('-')) throw new Error(`curl option ${w} is not understood by test/helpers/curl.ts`);
    else if (url === undefined) url = w;
    else throw new Error(`two URLs in ${line}`);
  }
  if (url === undefined) throw new Error(`no URL in ${line}`);
  if (body !== undefined && !headers.some(([n]) => n.toLowerCase() === 'content-type')) headers.push(['Content-Type', 'application/x-www-form-urlencoded']);
  return { method: method ?? (body !== undefined ? 'POST' : 'GET'), url: new URL(/^\w+:\/\//.test(url) ? url : `http://${url}`), headers, body, repeat, printsStatus };
}

function once(req: CurlRequest): Promise<Omit<CurlResult, 'statuses'>> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    for (const [n, v] of req.headers) headers[n] = v;
    if (req.body !== undefined) headers['Content-Length'] = String(Buffer.byteLength(req.body));
    const r = request(
      { host: req.url.hostname === 'localhost' ? '127.0.0.1' : req.url.hostname, port: req.url.port, path: req.url.pathname + req.url.search, method: req.method, headers },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on('error', reject);
      },
    );
    // A 101 ends the HTTP exchange: what follows is the upgraded protocol, which the guides do not read.
    r.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode ?? 0, headers: res.headers, body: '' });
    });
    r.setTimeout(10_000, () => r.destroy(new Error(`no answer to ${req.method} ${req.url.href} within 10 s`)));
    r.on('error', reject);
    r.end(req.body);
  });
}

/** Runs a parsed command: the last response, and every status when it loops. */
export async function runCurl(req: CurlRequest): Promise<CurlResult> {
  const statuses: number[] = [];
  let last: Omit<CurlResult, 'statuses'> | undefined;
  for (let i = 0; i < req.repeat; i++) {
    last = await once(req);
    statuses.push(last.status);
  }
  return { ...last!, statuses };
}
