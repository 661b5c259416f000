import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

/** Two tiny example backends for the demo: they echo what reached them, so the gateway's work shows. */
function service(name: string, handle: (req: IncomingMessage, res: ServerResponse, body: string) => unknown): Server {
  return createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      const data = handle(req, res, body);
      const json = JSON.stringify({ service: name, ...(data as object), path: req.url, requestId: req.headers['x-request-id'] });
      res.writeHead(res.statusCode, { 'content-type': 'application/json' });
      res.end(json);
    });
  });
}

export function startServices(usersPort = 3001, ordersPort = 3002): Promise<Server[]> {
  const users = service('users', (req) => {
    const id = /^\/(\w+)/.exec(req.url ?? '')?.[1];
    return id ? { user: { id, name: `User ${id}` } } : { users: [{ id: '1' }, { id: '2' }] };
  });
  const orders = service('orders', (req, res, body) => {
    if (req.method === 'POST') {
      res.statusCode = 201;
      return { created: body ? (JSON.parse(body) as unknown) : null };
    }
    return { orders: [{ id: 'o-1', total: 42 }] };
  });
  return Promise.all(
    [
      [users, usersPort],
      [orders, ordersPort],
    ].map(([s, p]) => new Promise<Server>((resolve) => (s as Server).listen(p as number, '127.0.0.1', () => resolve(s as Server)))),
  );
}
