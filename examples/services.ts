import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';

/**
 * The example backends of the demo and of the guides in docs/. They echo what reached them (path,
 * request id, the identity headers the gateway set), so the gateway's work shows in every answer.
 */
export interface ServicePorts {
  users: number;
  orders: number;
  catalog: number;
  inventoryA: number;
  inventoryB: number;
}

/** The ports examples/gateway.yaml and the guides name; DEMO_*_PORT variables move them. */
export function servicePorts(env: NodeJS.ProcessEnv = process.env): ServicePorts {
  const port = (name: string, fallback: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === '') return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`${name} must be a port number (got "${raw}")`);
    return n;
  };
  return {
    users: port('DEMO_USERS_PORT', 3001),
    orders: port('DEMO_ORDERS_PORT', 3002),
    catalog: port('DEMO_CATALOG_PORT', 3003),
    inventoryA: port('DEMO_INVENTORY_A_PORT', 3004),
    inventoryB: port('DEMO_INVENTORY_B_PORT', 3005),
  };
}

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => object;

const IDENTITY = ['x-consumer-id', 'x-user-id', 'x-user-roles'] as const;

function service(name: string, handle: Handler): Server {
  return createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      const data = handle(req, res, body);
      const identity: Record<string, string> = {};
      for (const h of IDENTITY) {
        const v = req.headers[h];
        if (typeof v === 'string') identity[h] = v;
      }
      const json = JSON.stringify({
        service: name,
        ...data,
        path: req.url,
        requestId: req.headers['x-request-id'],
        ...(Object.keys(identity).length ? { identity } : {}),
      });
      if (!res.hasHeader('content-type')) res.setHeader('content-type', 'application/json');
      res.end(json);
    });
  });
}

function listen(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** One of the two inventory targets: answers with its name, so balancing and failover show. */
function inventory(target: string): Server {
  return service('inventory', (req) => (req.url === '/health' ? { target, healthy: true } : { target, items: [{ sku: 'sku-1', stock: 7 }] }));
}

export class ExampleServices {
  private readonly servers = new Map<string, { server: Server; port: number }>();
  private readonly sockets = new WebSocketServer({ noServer: true });
  private catalogServed = 0;

  private constructor(readonly ports: ServicePorts) {}

  /** Starts every service; ports given as 0 are chosen by the system (read them back from `ports`). */
  static async start(ports: ServicePorts = servicePorts()): Promise<ExampleServices> {
    const s = new ExampleServices({ ...ports });
    await s.startAll();
    return s;
  }

  private async startAll(): Promise<void> {
    const users = service('users', (req, res) => {
      // A toy external authorizer (docs/guides/authentication.md): one token is good, and says who it is.
      if (req.url?.startsWith('/authz')) {
        if (req.headers.authorization === 'Bearer let-me-in') {
          res.setHeader('x-auth-consumer', 'carol');
          res.setHeader('cache-control', 'max-age=60');
          return { allowed: true };
        }
        res.statusCode = 401;
        res.setHeader('www-authenticate', 'Bearer realm="toy-authorizer"');
        return { allowed: false };
      }
      const id = /^\/(\w+)/.exec(req.url ?? '')?.[1];
      return id ? { user: { id, name: `User ${id}` } } : { users: [{ id: '1' }, { id: '2' }] };
    });
    const orders = service('orders', (req, res, body) => {
      if (req.method === 'POST') {
        res.statusCode = 201;
        let created: unknown = body;
        try {
          created = body ? (JSON.parse(body) as unknown) : null;
        } catch {
          // Not JSON: echoed as text.
        }
        return { created };
      }
      return { orders: [{ id: 'o-1', total: 42 }] };
    });
    // An echo WebSocket on the orders service: the demo's WebSocket route reaches it through the gateway.
    orders.on('upgrade', (req, socket, head) => {
      this.sockets.handleUpgrade(req, socket, head, (ws) => {
        ws.on('message', (data, binary) => ws.send(data, { binary }));
      });
    });
    const catalog = service('catalog', (_req, res) => {
      // Fresh for 30 s in shared caches: the gateway's cache answers the next requests itself.
      res.setHeader('cache-control', 'public, max-age=30');
      this.catalogServed++;
      return { products: [{ id: 'p-1', name: 'Lamp' }], servedByUpstream: this.catalogServed, at: new Date().toISOString() };
    });
    const entries: [string, Server, number][] = [
      ['users', users, this.ports.users],
      ['orders', orders, this.ports.orders],
      ['catalog', catalog, this.ports.catalog],
      ['inventory-a', inventory('inventory-a'), this.ports.inventoryA],
      ['inventory-b', inventory('inventory-b'), this.ports.inventoryB],
    ];
    for (const [name, server, port] of entries) this.servers.set(name, { server, port: await listen(server, port) });
    this.ports.users = this.port('users');
    this.ports.orders = this.port('orders');
    this.ports.catalog = this.port('catalog');
    this.ports.inventoryA = this.port('inventory-a');
    this.ports.inventoryB = this.port('inventory-b');
  }

  private port(name: string): number {
    return this.servers.get(name)!.port;
  }

  names(): string[] {
    return [...this.servers.keys()];
  }

  isRunning(name: string): boolean {
    return this.servers.get(name)?.server.listening ?? false;
  }

  /** Stops one service as a crash would: its port refuses connections until `resume`. */
  async stop(name: string): Promise<void> {
    const entry = this.servers.get(name);
    if (!entry) throw new Error(`no service ${name}`);
    if (!entry.server.listening) return;
    await new Promise<void>((resolve) => {
      entry.server.close(() => resolve());
      entry.server.closeAllConnections();
    });
  }

  async resume(name: string): Promise<void> {
    const entry = this.servers.get(name);
    if (!entry) throw new Error(`no service ${name}`);
    if (entry.server.listening) return;
    await listen(entry.server, entry.port);
  }

  async close(): Promise<void> {
    for (const ws of this.sockets.clients) ws.terminate();
    await Promise.all([...this.servers.keys()].map((n) => this.stop(n)));
  }
}

if (require.main === module) {
  void ExampleServices.start().then((s) => {
    process.stdout.write(`example services: ${JSON.stringify(s.ports)}\n`);
    const stop = (): void => void s.close().then(() => process.exit(0));
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
