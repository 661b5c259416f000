type Obj = Record<string, any>;

/** One Kong plugin instance, wherever the file put it. */
export interface KongPlugin {
  name: string;
  config: Obj;
  /** Its path in the Kong file. */
  path: string;
  /** Our consumer, for a plugin scoped to a consumer. */
  consumer?: Obj;
  /** Already listed as not converted (a global plugin reaches every route). */
  reported?: boolean;
}

export interface Scope {
  doc: Obj;
  services: { kong: Obj; path: string }[];
  consumers: Map<string, { out: Obj; path: string }>;
}

export interface PluginIndex {
  global: KongPlugin[];
  consumer: KongPlugin[];
  jwtPlugins: KongPlugin[];
  /** The plugins that run on a route, Kong's precedence applied: route over service over global. */
  forRoute(route: Obj): KongPlugin[];
}

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const list = (v: unknown): any[] => (Array.isArray(v) ? v : []);
const ref = (v: unknown): string | undefined => (typeof v === 'string' ? v : isObj(v) ? (v.name ?? v.id) : undefined);

/** Where each plugin of the file applies: on a route, a service, a consumer or everywhere. */
export function pluginsAt(scope: Scope, report: (p: string, m: string) => void): PluginIndex {
  const byRoute = new Map<Obj, KongPlugin[]>();
  const byService = new Map<Obj, KongPlugin[]>();
  const global: KongPlugin[] = [];
  const consumer: KongPlugin[] = [];
  const jwtPlugins: KongPlugin[] = [];
  const routesByName = new Map<string, Obj>();
  const servicesByName = new Map<string, Obj>();
  for (const s of scope.services) {
    for (const n of [s.kong.name, s.kong.id]) if (typeof n === 'string') servicesByName.set(n, s.kong);
    for (const r of list(s.kong.routes)) for (const n of [r?.name, r?.id]) if (typeof n === 'string') routesByName.set(n, r);
  }
  for (const r of list(scope.doc.routes)) for (const n of [r?.name, r?.id]) if (typeof n === 'string') routesByName.set(n, r);

  const push = <K>(map: Map<K, KongPlugin[]>, key: K, p: KongPlugin) => map.set(key, [...(map.get(key) ?? []), p]);

  const add = (raw: unknown, path: string, at: { route?: Obj; service?: Obj; consumer?: string }) => {
    if (!isObj(raw) || typeof raw.name !== 'string') return report(path, 'not a plugin (no name)');
    if (raw.enabled === false) return report(`${path} (name: ${raw.name})`, `disabled; left out`);
    const p: KongPlugin = { name: raw.name, config: isObj(raw.config) ? raw.config : {}, path };
    const route = at.route ?? (ref(raw.route) !== undefined ? routesByName.get(ref(raw.route)!) : undefined);
    const service = at.service ?? (ref(raw.service) !== undefined ? servicesByName.get(ref(raw.service)!) : undefined);
    const consumerName = at.consumer ?? ref(raw.consumer);
    if ((raw.route !== undefined && !route) || (raw.service !== undefined && !service)) return report(`${path} (name: ${p.name})`, `names a route or service this file does not define; left out`);
    if (list(raw.protocols).some((x) => !['http', 'https', 'ws', 'wss'].includes(x)) && list(raw.protocols).every((x) => !['http', 'https'].includes(x))) {
      return report(`${path} (name: ${p.name})`, `for protocols ${list(raw.protocols).join(', ')} only; left out`);
    }
    if (p.name === 'jwt') jwtPlugins.push(p);
    if (consumerName !== undefined) {
      const c = scope.consumers.get(consumerName);
      if (!c) return report(`${path} (name: ${p.name})`, `names consumer "${consumerName}", which this file does not define; left out`);
      if (route || service) return report(`${path} (name: ${p.name})`, `a plugin for one consumer on one route or service has no equivalent; left out`);
      p.consumer = c.out;
      consumer.push(p);
    } else if (route) push(byRoute, route, p);
    else if (service) push(byService, service, p);
    else global.push(p);
  };

  list(scope.doc.plugins).forEach((p, i) => add(p, `plugins[${i}]`, {}));
  for (const s of scope.services) {
    list(s.kong.plugins).forEach((p, i) => add(p, `${s.path}.plugins[${i}]`, { service: s.kong }));
    list(s.kong.routes).forEach((r, j) => list(r?.plugins).forEach((p, i) => add(p, `${s.path}.routes[${j}].plugins[${i}]`, { route: r })));
  }
  list(scope.doc.routes).forEach((r, j) => list(r?.plugins).forEach((p, i) => add(p, `routes[${j}].plugins[${i}]`, { route: r })));
  list(scope.doc.consumers).forEach((c, j) => {
    const name = c?.username ?? c?.custom_id ?? c?.id;
    list(c?.plugins).forEach((p, i) => add(p, `consumers[${j}].plugins[${i}]`, { consumer: name }));
  });

  // CORS and IP rules of the whole gateway go to the top-level policies, not onto every route.
  const perRouteGlobal = global.filter((p) => p.name !== 'cors' && p.name !== 'ip-restriction');
  return {
    global,
    consumer,
    jwtPlugins,
    forRoute(route) {
      const chosen = new Map<string, KongPlugin>();
      for (const layer of [perRouteGlobal, byService.get(serviceOf(route)) ?? [], byRoute.get(route) ?? []]) {
        for (const p of layer) chosen.set(p.name, p);
      }
      return [...chosen.values()];
    },
  };

  function serviceOf(route: Obj): Obj {
    for (const s of scope.services) if (list(s.kong.routes).includes(route)) return s.kong;
    const name = ref(route.service);
    return (name !== undefined ? servicesByName.get(name) : undefined) ?? {};
  }
}
