import { call } from './http';

/**
 * The value of one sample from the gateway's /metrics (0 when absent), matched by name and by the
 * labels given (other labels may be present).
 */
export async function metricValue(adminUrl: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const res = await call(adminUrl, '/metrics');
  let total = 0;
  let found = false;
  for (const line of res.body.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    const labelText = line.slice(name.length).startsWith('{') ? line.slice(name.length + 1, line.indexOf('}')) : '';
    if (!Object.entries(labels).every(([k, v]) => labelText.includes(`${k}="${v}"`))) continue;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
    found = true;
  }
  return found ? total : 0;
}
