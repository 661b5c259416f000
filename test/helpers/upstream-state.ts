import type { TestGateway } from './gateway';
import { call } from './http';

/** Admin token the resilience tests configure, so that /admin/upstreams answers. */
export const ADMIN_TOKEN = 'resilience-admin-token-0123456789';

export interface TargetView {
  url: string;
  routable: boolean;
  healthy: boolean;
  breaker: string;
  breakerOpenForMs: number;
  breakerTrips: number;
  inFlight: number;
  queued: number;
  connections: { inUse: number; idle: number };
  healthCheck: { path: string; last: { ok: boolean; detail: string } | null } | null;
}

/** The targets of an upstream (the first one by default) as GET /admin/upstreams shows them. */
export async function targetViews(gw: TestGateway, upstream?: string): Promise<TargetView[]> {
  const res = await call(gw.adminUrl, '/admin/upstreams', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  if (res.status !== 200) throw new Error(`/admin/upstreams answered ${res.status}: ${res.body}`);
  const all = res.json<{ name: string; targets: TargetView[] }[]>();
  return (upstream === undefined ? all[0] : all.find((u) => u.name === upstream)!).targets;
}
